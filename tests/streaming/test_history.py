"""Channel history: gapless offsets, retention by size and age, recovery reads, the history API."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from streaming import protocol, services
from streaming.history import history_append, history_expire, history_head, history_read
from streaming.models import Channel, ChannelMessage

pytestmark = pytest.mark.django_db


def publish(channel: str, count: int, start: int = 0) -> list[services.Published]:
    return [
        services.publish_to_channel(channel=channel, content={"n": n}, persist=True)
        for n in range(start, start + count)
    ]


def offsets(channel: str) -> list[int]:
    return list(ChannelMessage.objects.filter(channel_id=channel).order_by("offset").values_list("offset", flat=True))


def contents(recovery) -> list[int]:
    return [message["content"]["n"] for message in recovery.messages]


def test_history_append_gives_consecutive_offsets_per_channel():
    published = publish("alpha", 3) + publish("beta", 2) + publish("alpha", 1, start=3)
    assert [(p.channel, p.offset) for p in published] == [
        ("alpha", 1), ("alpha", 2), ("alpha", 3), ("beta", 1), ("beta", 2), ("alpha", 4),
    ]  # fmt: skip
    assert offsets("alpha") == [1, 2, 3, 4] and offsets("beta") == [1, 2]
    assert history_head("alpha") == 4 and history_head("beta") == 2 and history_head("never") == 0
    row = ChannelMessage.objects.get(channel_id="alpha", offset=4)
    assert row.message_id == published[-1].id and row.envelope()["content"] == {"n": 3} and row.type == "message"


def test_history_append_rolled_back_gives_its_offset_back():
    publish("rollback", 2)
    outgoing = services.prepare(services.Publish("rollback", "lost", persist=True))
    with pytest.raises(RuntimeError), transaction.atomic():
        (text,) = history_append([(outgoing.channel, outgoing.envelope, outgoing.text)])
        assert outgoing.envelope["offset"] == 3 and protocol.decode(text)["offset"] == 3
        raise RuntimeError("the publisher's transaction fails")
    assert history_head("rollback") == 2
    (again,) = publish("rollback", 1, start=2)
    assert again.offset == 3
    assert offsets("rollback") == [1, 2, 3]


def test_history_append_on_a_new_channel_creates_its_head_row():
    assert not Channel.objects.filter(name="fresh").exists()
    (first,) = publish("fresh", 1)
    assert first.offset == 1
    assert Channel.objects.get(name="fresh").last_offset == 1


def test_persisted_envelope_matches_what_history_returns():
    published = services.publish_to_channel(
        channel="same",
        content={"k": "v"},
        type="news_update",
        persist=True,
        sender={"user_id": "u", "connection_id": "c"},
    )
    (stored,) = history_read("same").messages
    assert stored["id"] == published.id and stored["offset"] == 1
    assert stored["type"] == "news_update" and stored["channel"] == "same" and stored["content"] == {"k": "v"}
    assert stored["sender"] == {"user_id": "u", "connection_id": "c"}
    assert stored["timestamp"].endswith("Z")


def test_persisted_content_is_stored_faithfully_nul_included():
    content = {"text": "a\x00b", "k\x00": ["\x00"]}
    published = services.publish_to_channel(channel="nul", content=content, persist=True)
    (stored,) = history_read("nul").messages
    assert stored["id"] == published.id and stored["content"] == content


def test_stored_rows_carry_their_creation_time_and_ids():
    before = timezone.now()
    published = services.publish_to_channel(channel="timed", content=1, persist=True, message_id="m-1", type="chat")
    row = ChannelMessage.objects.get(channel_id="timed")
    assert (row.offset, row.message_id, row.type) == (1, "m-1", "chat") and published.offset == 1
    assert before - timedelta(seconds=1) <= row.created_at <= timezone.now()


def test_history_size_trims_the_oldest_messages(realtime):
    realtime(channel_history_size=3)
    publish("trimmed", 5)
    publish("other", 2)
    assert offsets("trimmed") == [3, 4, 5]
    assert offsets("other") == [1, 2]
    recovery = history_read("trimmed")
    assert contents(recovery) == [2, 3, 4] and recovery.offset == 5
    assert not recovery.recovered  # a new reader, not a recovery


@pytest.mark.parametrize(
    ("since", "recovered", "expected"),
    [
        (0, False, [2, 3, 4]),  # offsets 1 and 2 are gone
        (1, False, [2, 3, 4]),  # offset 2 is gone
        (2, True, [2, 3, 4]),
        (3, True, [3, 4]),
        (4, True, [4]),
        (5, True, []),  # up to date
        (6, False, []),  # a position this history never had
        (99, False, []),
    ],
)
def test_history_read_since_recovers_exactly_what_was_missed(realtime, since, recovered, expected):
    realtime(channel_history_size=3)
    publish("since", 5)
    recovery = history_read("since", since=since)
    assert (recovery.recovered, contents(recovery), recovery.offset) == (recovered, expected, 5)
    assert [m["offset"] for m in recovery.messages] == [n + 1 for n in expected]


def test_history_read_of_an_empty_channel():
    assert history_read("empty") == history_read("empty", since=None)
    assert history_read("empty").messages == [] and not history_read("empty").recovered
    assert history_read("empty", since=0).recovered  # nothing was ever missed
    assert not history_read("empty", since=3).recovered


def test_history_size_zero_keeps_nothing_but_offsets_still_count(realtime):
    realtime(channel_history_size=0)
    published = publish("none", 3)
    assert [p.offset for p in published] == [1, 2, 3]
    assert offsets("none") == []
    assert history_read("none").messages == []
    assert not history_read("none", since=1).recovered
    assert history_read("none", since=3).recovered


def _age(channel: str, offsets_: list[int], seconds: float) -> None:
    ChannelMessage.objects.filter(channel_id=channel, offset__in=offsets_).update(
        created_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_history_ttl_hides_expired_messages_on_read(realtime):
    realtime(channel_history_ttl=60)
    publish("aging", 5)
    _age("aging", [1, 2], 61)
    assert contents(history_read("aging")) == [2, 3, 4]
    assert not history_read("aging", since=0).recovered
    assert not history_read("aging", since=1).recovered
    recovered = history_read("aging", since=2)
    assert recovered.recovered and contents(recovered) == [2, 3, 4]
    _age("aging", [3, 4, 5], 61)
    assert history_read("aging").messages == []
    assert not history_read("aging", since=4).recovered
    assert history_read("aging", since=5).recovered  # nothing after 5 was missed


def test_history_expire_deletes_expired_rows_only(realtime):
    realtime(channel_history_ttl=60)
    publish("aging", 4)
    publish("young", 2)
    _age("aging", [1, 2, 3], 120)
    _age("young", [1], 30)
    assert history_expire() == 3
    assert offsets("aging") == [4] and offsets("young") == [1, 2]
    assert history_head("aging") == 4  # the sequence goes on: no offset is reused
    assert history_expire() == 0
    (next_one,) = publish("aging", 1)
    assert next_one.offset == 5


def test_registry_flush_runs_the_periodic_expiry(realtime):
    from asgiref.sync import async_to_sync

    from streaming.registry import ConnectionRegistry

    realtime(channel_history_ttl=60)
    publish("periodic", 3)
    _age("periodic", [1, 2], 120)
    registry = ConnectionRegistry()
    registry._registered_process = True  # as if a connection had been open: the flush writes
    registry._next_expiry = 0.0  # as if HISTORY_EXPIRY_SECONDS had passed since the last expiry
    async_to_sync(registry.flush)()
    assert offsets("periodic") == [3]


# ---------------------------------------------------------------------------------------------
# paging


@pytest.mark.parametrize("limit", [1, 3, 4, 10])
def test_history_read_pages_through_with_since_and_has_more(limit):
    publish("paged", 10)
    seen, since, pages = [], 0, 0
    while True:
        page = history_read("paged", since=since, limit=limit)
        assert page.recovered and len(page.messages) <= limit
        seen += contents(page)
        pages += 1
        if not page.has_more:
            break
        since = page.messages[-1]["offset"]
    assert seen == list(range(10))
    assert pages == -(-10 // limit)


def test_history_read_without_since_is_the_newest_page(realtime):
    publish("newest", 6)
    page = history_read("newest", limit=2)
    assert contents(page) == [4, 5] and not page.has_more and page.offset == 6


# ---------------------------------------------------------------------------------------------
# HTTP API


def test_history_api_pages_through_a_channel(client):
    published = publish("api-history", 5)
    body = client.get("/api/channels/api-history/history/?since=0&limit=2").json()
    assert body["channel"] == "api-history" and body["offset"] == 5
    assert [m["offset"] for m in body["messages"]] == [1, 2]
    assert body["has_more"] is True and body["recovered"] is True
    assert body["messages"][0]["id"] == published[0].id
    assert set(body["messages"][0]) == {"id", "type", "channel", "content", "sender", "timestamp", "offset"}
    body = client.get("/api/channels/api-history/history/?since=2&limit=2").json()
    assert [m["offset"] for m in body["messages"]] == [3, 4] and body["has_more"] is True
    body = client.get("/api/channels/api-history/history/?since=4&limit=2").json()
    assert [m["offset"] for m in body["messages"]] == [5] and body["has_more"] is False
    body = client.get("/api/channels/api-history/history/?since=5").json()
    assert body["messages"] == [] and body["recovered"] is True and body["has_more"] is False
    body = client.get("/api/channels/api-history/history/").json()
    assert [m["offset"] for m in body["messages"]] == [1, 2, 3, 4, 5] and body["recovered"] is False


def test_history_api_reports_history_that_no_longer_reaches_back(client, realtime):
    realtime(channel_history_size=2)
    publish("api-short", 4)
    body = client.get("/api/channels/api-short/history/?since=1").json()
    assert body["recovered"] is False and [m["offset"] for m in body["messages"]] == [3, 4]
    body = client.get("/api/channels/api-short/history/?since=2").json()
    assert body["recovered"] is True and [m["offset"] for m in body["messages"]] == [3, 4]


@pytest.mark.parametrize("query", ["since=-1", "since=x", "limit=0", "limit=1001", "limit=two"])
def test_history_api_rejects_bad_paging(client, query):
    response = client.get(f"/api/channels/news/history/?{query}")
    assert response.status_code == 400
    assert response.json()["type"] == "invalid_message"


def test_history_api_rejects_an_invalid_channel_name(client):
    response = client.get("/api/channels/-bad/history/")
    assert response.status_code == 400 and response.json()["type"] == "invalid_channel"


def test_channel_api_shows_the_newest_offset(client):
    publish("listed", 3)
    detail = client.get("/api/channels/listed/").json()
    assert detail["name"] == "listed" and detail["offset"] == 3 and detail["subscribers"] == 0
    listed = {c["name"]: c for c in client.get("/api/channels/").json()["results"]}
    assert listed["listed"]["offset"] == 3
    assert client.get("/api/channels/unknown/").json()["offset"] == 0


def test_history_pages_are_bounded_in_bytes(realtime):
    realtime(history_page_max_bytes=2048)
    for n in range(6):
        services.publish_to_channel(channel="big", content={"n": n, "pad": "x" * 700}, persist=True)
    first = history_read("big", since=0)
    assert contents(first) == [0, 1] and first.has_more and first.recovered
    second = history_read("big", since=2)
    assert contents(second) == [2, 3] and second.has_more
    last = history_read("big", since=4)
    assert contents(last) == [4, 5] and not last.has_more
    newest = history_read("big")  # a new subscriber: the newest that fit
    assert contents(newest) == [4, 5]
    realtime(history_page_max_bytes=1024)
    assert contents(history_read("big", since=0)) == [0]  # one message, even alone over the budget
    assert contents(history_read("big", since=0, limit=1)) == [0]


def test_history_api_pages_by_bytes(client, realtime):
    realtime(history_page_max_bytes=2048)
    for n in range(5):
        services.publish_to_channel(channel="paged", content={"n": n, "pad": "x" * 700}, persist=True)
    seen, since = [], 0
    while True:
        body = client.get(f"/api/channels/paged/history/?since={since}").json()
        seen += [m["content"]["n"] for m in body["messages"]]
        since = body["messages"][-1]["offset"]
        if not body["has_more"]:
            break
    assert seen == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# Epochs and the heads of idle channels


def test_a_reset_starts_offsets_again_under_a_new_epoch_and_old_positions_are_not_recovered():
    publish("reset-me", 3)
    before = history_read("reset-me", since=1)
    assert before.recovered and len(before.epoch) == 8
    epoch = services.history_reset("reset-me")
    assert epoch != before.epoch and offsets("reset-me") == []
    assert [p.offset for p in publish("reset-me", 2)] == [1, 2]
    stale = history_read("reset-me", since=1, epoch=before.epoch)
    assert (stale.recovered, stale.messages, stale.offset, stale.epoch) == (False, [], 2, epoch)
    current = history_read("reset-me", since=1, epoch=epoch)
    assert current.recovered and contents(current) == [1]
    assert history_read("reset-me", since=1).recovered  # no epoch given: judged by the offset alone


def test_idle_empty_heads_are_pruned_unless_a_live_connection_is_subscribed():
    from streaming.history import history_prune_heads
    from streaming.models import Connection, ServerProcess, Subscription

    for channel in ("idle", "watched", "busy"):
        publish(channel, 2)
    old = timezone.now() - timedelta(days=3)
    ChannelMessage.objects.filter(channel_id__in=["idle", "watched"]).update(created_at=old)
    Channel.objects.update(updated_at=old)  # busy keeps its messages: not pruned
    process = ServerProcess.objects.create(
        id="p", bus_channel="x", hostname="h", pid=1, started_at=timezone.now(), last_heartbeat=timezone.now()
    )
    connection = Connection.objects.create(
        id="c", transport="ws", process=process, connected_at=timezone.now(), last_seen=timezone.now()
    )
    Subscription.objects.create(connection=connection, channel="watched")
    old_epoch = history_read("idle").epoch
    history_expire()
    assert history_prune_heads() == 1
    assert sorted(Channel.objects.values_list("name", flat=True)) == ["busy", "watched"]
    assert history_read("idle", since=2, epoch=old_epoch).recovered is False  # the old position is gone
    (again,) = publish("idle", 1)
    assert again.offset == 1 and history_read("idle").epoch not in ("", old_epoch)
    assert history_prune_heads() == 0
