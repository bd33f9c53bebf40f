"""The test kit's recorder (`realtime_published`): what the one publish path delivers, when it delivers it."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid

import pytest
from django.db import transaction

from notifications.messages import NotificationMessage
from notifications.services import notification_create
from streaming import delivery, services
from streaming.models import ChannelMessage
from streaming.services import Publish
from streaming.testing import PublishedMessage, record_published

pytestmark = pytest.mark.django_db  # a publish from a process without a server asks the database for one


def test_a_sync_publish_is_recorded_with_its_envelope(realtime_published):
    published = services.publish_to_channel(channel="news", content={"title": "hi"}, type="news_update")
    message = realtime_published.assert_published(channel="news", type="news_update", content={"title": "hi"})
    assert isinstance(message, PublishedMessage)
    assert (message.id, message.offset, message.sender, message.persist, message.epoch) == (
        published.id, None, None, False, None
    )  # fmt: skip
    assert message.envelope == {
        "id": published.id, "type": "news_update", "channel": "news", "content": {"title": "hi"},
        "sender": None, "timestamp": message.timestamp, "offset": None,
    }  # fmt: skip
    assert realtime_published.messages == [message] and len(realtime_published) == 1


async def test_an_async_publish_is_recorded(realtime_published):
    published = await services.apublish_to_channel(channel="room", content=[1, 2], type="chat")
    message = realtime_published.assert_published(channel="room", type="chat")
    assert message.id == published.id and message.content == [1, 2]
    await services.abroadcast(content="all")
    await services.apublish_to_user(user_id="u1", content="you")
    realtime_published.assert_published(channel="broadcast", content="all")
    realtime_published.assert_published(channel="user:u1", content="you")


@pytest.mark.django_db(transaction=True)
def test_a_persisted_publish_is_recorded_with_offset_and_epoch(realtime_published):
    first = services.publish_to_channel(channel="log", content={"n": 1}, persist=True)
    second = services.publish_to_channel(channel="log", content={"n": 2}, persist=True)
    records = realtime_published.on("log")
    assert [(m.id, m.offset, m.persist) for m in records] == [(first.id, 1, True), (second.id, 2, True)]
    assert records[0].epoch and records[0].epoch == records[1].epoch
    assert records[0].envelope["offset"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_records_nothing(realtime_published):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.publish_to_channel(channel="orders", content={"n": 1}, persist=True)
        realtime_published.assert_not_published()  # not before the commit either
        raise RuntimeError("the view failed")
    realtime_published.assert_not_published()
    assert not ChannelMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_persisted_publish_in_a_transaction_is_recorded_when_it_commits(realtime_published):
    with transaction.atomic():
        services.publish_to_channel(channel="orders", content={"n": 1}, persist=True)
        assert not realtime_published.messages
    realtime_published.assert_published(channel="orders", offset=1, persist=True)


def test_under_django_db_on_commit_deliveries_need_capturing(realtime_published, django_capture_on_commit_callbacks):
    # The test's transaction never commits: a persisted publish is stored but not delivered…
    services.publish_to_channel(channel="orders", content={"n": 1}, persist=True)
    realtime_published.assert_not_published()
    # …unless the on_commit callbacks are run.
    with django_capture_on_commit_callbacks(execute=True):
        services.publish_to_channel(channel="orders", content={"n": 2}, persist=True)
    realtime_published.assert_published(channel="orders", content={"n": 2}, offset=2, times=1)


def test_under_django_db_a_rolled_back_block_records_nothing(realtime_published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ValueError), transaction.atomic():
            services.publish_to_channel(channel="orders", content={"n": 1}, persist=True)
            raise ValueError("refused")
        services.publish_to_channel(channel="orders", content={"n": 2}, persist=True)
    realtime_published.assert_published(channel="orders", times=1, content={"n": 2})


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_recorded_message_by_message(realtime_published):
    # An id of its own: this process remembers published ids (PUBLISH_IDEMPOTENCY_WINDOW) across tests.
    message_id = f"m-{uuid.uuid4().hex}"
    services.publish_batch(
        [
            Publish("room-1", {"n": 0}, persist=True),
            Publish("room-2", {"n": 1}, type="chat"),
            Publish("room-1", {"n": 2}, message_id=message_id, persist=True),
        ]
    )
    assert [(m.content, m.offset) for m in realtime_published.on("room-1")] == [({"n": 0}, 1), ({"n": 2}, 2)]
    assert realtime_published.assert_published(content={"n": 2}).id == message_id
    realtime_published.assert_published(channel="room-2", type="chat", persist=False)


@pytest.mark.django_db(transaction=True)
async def test_an_async_batch_is_recorded_after_its_group_commit(realtime_published):
    await services.apublish_batch([Publish("a", 1, persist=True), Publish("a", 2, persist=True), Publish("b", 3)])
    assert [(m.content, m.offset) for m in realtime_published.on("a")] == [(1, 1), (2, 2)]
    realtime_published.assert_published(channel="b", content=3, offset=None)


@pytest.mark.django_db(transaction=True)
def test_a_notification_is_recorded(realtime_published):
    notification = notification_create(message=NotificationMessage(title="Deploy", content="done"), user_id="u1")
    message = realtime_published.assert_published(channel="user:u1", type="notification")
    assert message.content["title"] == "Deploy" and message.content["notification_id"] == notification.pk


def test_criteria_may_be_predicates_and_a_count(realtime_published):
    for n in range(3):
        services.publish_to_channel(channel=f"sensor-{n}", content={"n": n})
    found = realtime_published.assert_published(channel=lambda c: c.startswith("sensor-"), content=lambda c: c["n"] > 0)
    assert found.content == {"n": 1}
    realtime_published.assert_published(channel=lambda c: c.startswith("sensor-"), times=3)
    assert [m.channel for m in realtime_published.filter(content=lambda c: c["n"] < 2)] == ["sensor-0", "sensor-1"]
    with pytest.raises(TypeError, match="unknown criteria colour"):
        realtime_published.assert_published(colour="red")


def test_a_failed_assertion_lists_what_was_published(realtime_published):
    services.publish_to_channel(channel="news", content={"title": "a"}, type="news_update")
    services.publish_to_channel(channel="other", content="x")
    with pytest.raises(AssertionError) as failure:
        realtime_published.assert_published(channel="news", content={"title": "b"})
    text = str(failure.value)
    assert text.startswith("no published message(s) match: channel='news', content={'title': 'b'}")
    assert "published (2):" in text
    assert re.search(r"\[0\] channel='news' type='news_update' content=\{'title': 'a'\}.*differs in content", text)
    assert "[1] channel='other' type='message' content='x'" in text

    with pytest.raises(AssertionError, match=r"^2 \(not 1\) published message\(s\) match: \(any message\)"):
        realtime_published.assert_published(times=1)
    with pytest.raises(AssertionError) as failure:
        realtime_published.assert_not_published(channel="other")
    assert "1 published message(s) match: channel='other'" in str(failure.value)
    assert "matching (1):\n  [0] channel='other'" in str(failure.value)


def test_a_failed_assertion_says_when_nothing_was_published(realtime_published):
    with pytest.raises(AssertionError, match="nothing was published"):
        realtime_published.assert_published(channel="news")
    realtime_published.assert_not_published()


def test_clear_forgets_and_recording_goes_on(realtime_published):
    services.publish_to_channel(channel="a", content=1)
    realtime_published.clear()
    realtime_published.assert_not_published()
    services.publish_to_channel(channel="b", content=2)
    assert [m.channel for m in realtime_published] == ["b"]


async def test_wait_for_a_publish_of_another_task(realtime_published):
    async def later() -> None:
        await asyncio.sleep(0.05)
        await services.apublish_to_channel(channel="jobs", content={"done": True})

    task = asyncio.create_task(later())
    message = await realtime_published.wait_for(channel="jobs", timeout=2)
    assert message.content == {"done": True}
    await task


async def test_wait_for_a_publish_of_another_thread(realtime_published):
    thread = threading.Timer(0.05, lambda: services.publish_to_channel(channel="jobs", content="from a thread"))
    thread.start()
    message = await realtime_published.wait_for(channel="jobs", timeout=2)
    assert message.content == "from a thread"
    thread.join()


async def test_wait_for_counts_what_was_published_already_and_times_out_clearly(realtime_published):
    await services.apublish_to_channel(channel="early", content=1)
    assert (await realtime_published.wait_for(channel="early", timeout=0.1)).content == 1
    with pytest.raises(AssertionError, match=r"no published message matched within 0.1 s: channel='late'"):
        await realtime_published.wait_for(channel="late", timeout=0.1)


def test_a_recorder_records_only_while_active():
    assert not delivery.recorders, "nothing is recorded outside the kit"
    with record_published() as published:
        services.publish_to_channel(channel="inside", content=1)
        with record_published() as nested:
            services.publish_to_channel(channel="nested", content=2)
    services.publish_to_channel(channel="outside", content=3)
    assert [m.channel for m in published.messages] == ["inside", "nested"]
    assert [m.channel for m in nested.messages] == ["nested"]
    assert not delivery.recorders
