"""The publish side: batches, group commit, idempotent publishing — over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async

from streaming import commits, services
from streaming.models import ChannelMessage
from tests.support.consumers import request

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, path, body, **extra):
    return client.post(path, body, content_type="application/json", **extra)


# ---------------------------------------------------------------------------------------------
# POST /api/publish/batch/


def test_batch_publishes_in_order_and_persists_in_one_go(client, realtime_published):
    messages = [
        {"channel": "room-1", "message": {"content": {"n": 0}}, "persist": True},
        {"channel": "room-2", "message": {"content": {"n": 1}, "type": "chat"}},
        {"channel": "room-1", "message": {"content": {"n": 2}, "id": "m-2"}, "persist": True},
        {"user_id": "u7", "message": {"content": {"n": 3}}},
        {"broadcast": True, "message": {"content": {"n": 4}}},
    ]
    response = post(client, "/api/publish/batch/", {"messages": messages})
    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [r.get("offset") for r in results] == [1, None, 2, None, None]
    assert results[2]["id"] == "m-2"
    rows = ChannelMessage.objects.filter(channel_id="room-1").order_by("offset")
    assert [(row.offset, row.message_id) for row in rows] == [(1, results[0]["id"]), (2, "m-2")]
    assert [(m.content, m.offset, m.id) for m in realtime_published.on("room-1")] == [
        ({"n": 0}, 1, results[0]["id"]), ({"n": 2}, 2, "m-2")
    ]  # fmt: skip
    realtime_published.assert_published(channel="room-2", type="chat", content={"n": 1}, times=1)
    realtime_published.assert_published(channel="user:u7", content={"n": 3}, times=1)
    realtime_published.assert_published(channel="broadcast", content={"n": 4}, times=1)
    assert len(realtime_published) == 5


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"channel": "bad name", "message": {"content": 1}}, "channel"),
        ({"message": {"content": 1}}, "non_field_errors"),
        ({"channel": "a", "user_id": "u1", "message": {"content": 1}}, "non_field_errors"),
        ({"user_id": "u1", "message": {"content": 1}, "persist": True}, "persist"),
        ({"channel": "a", "message": {"content": 1, "type": "x y"}}, "message"),
        ({"channel": "a", "message": {"content": 1}, "extra": 1}, "extra"),
    ],
)
def test_one_bad_item_refuses_the_whole_batch(client, bus, item, field):
    good = {"channel": "kept-out", "message": {"content": 1}, "persist": True}
    response = post(client, "/api/publish/batch/", {"messages": [good, item, good]})
    assert response.status_code == 400, response.content
    errors = response.json()["fields"]["messages"]
    assert set(errors) == {"1"} and field in errors["1"], errors
    assert not ChannelMessage.objects.exists() and not bus.published


def test_a_batch_is_bounded(client, bus, realtime):
    realtime(publish_batch_max_items=3)
    over = post(client, "/api/publish/batch/", {"messages": [{"channel": "c", "message": {"content": 1}}] * 4})
    assert over.status_code == 400 and "At most 3" in str(over.json()["fields"])
    # counted before any item is validated: four bad items get the one count error, not four
    bad = post(client, "/api/publish/batch/", {"messages": [{"channel": "bad name", "message": {}}] * 4})
    assert bad.status_code == 400 and bad.json()["fields"] == {"messages": ["At most 3 messages per batch."]}
    assert post(client, "/api/publish/batch/", {"messages": []}).status_code == 400
    assert not bus.published


def test_a_batch_with_an_oversized_message_refuses_it_all(client, bus, realtime):
    realtime(sse_max_message_size=1000)
    messages = [{"channel": "c", "message": {"content": "x"}}, {"channel": "c", "message": {"content": "x" * 2000}}]
    response = post(client, "/api/publish/batch/", {"messages": messages})
    assert response.status_code == 413 and not bus.published


# ---------------------------------------------------------------------------------------------
# Group commit


async def test_concurrent_persisted_publishes_share_transactions_and_keep_order(connect, monkeypatch):
    transactions = []
    real_persist = commits.persist
    monkeypatch.setattr(
        commits, "persist", lambda outgoings: transactions.append(len(outgoings)) or real_persist(outgoings)
    )
    subscriber = await connect()
    await request(subscriber, "subscribe", {"channel": "grouped"})
    published = await asyncio.gather(
        *(services.apublish_to_channel(channel="grouped", content=n, persist=True) for n in range(100))
    )
    assert sorted(p.offset for p in published) == list(range(1, 101))
    assert sum(transactions) == 100 and len(transactions) <= 5, transactions
    received = [await subscriber.receive_json_from(timeout=3) for _ in range(100)]
    assert [e["offset"] for e in received] == list(range(1, 101))  # delivered after commit, in offset order
    assert await database_sync_to_async(ChannelMessage.objects.filter(channel_id="grouped").count)() == 100
    await subscriber.disconnect()


# ---------------------------------------------------------------------------------------------
# Idempotent publishing


def test_a_retried_publish_is_answered_with_the_first_result(client, bus):
    body = {"channel": "retry", "message": {"id": "order-42", "content": {"total": 9}}, "persist": True}
    first = post(client, "/ws/send-to-channel", body)
    again = post(client, "/ws/send-to-channel", body)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() == {"id": "order-42", "offset": 1}
    assert ChannelMessage.objects.filter(channel_id="retry").count() == 1
    assert len(bus.published["retry"]) == 1
    other_channel = post(client, "/ws/send-to-channel", {**body, "channel": "retry-2"})
    assert other_channel.json() == {"id": "order-42", "offset": 1} and len(bus.published["retry-2"]) == 1


def test_idempotency_holds_for_batches_and_ends_with_its_window(client, bus, realtime):
    realtime(publish_idempotency_window=0.5)
    items = [{"channel": "win", "message": {"id": f"k{n}", "content": n}} for n in range(3)]
    assert post(client, "/api/publish/batch/", {"messages": items}).status_code == 202
    again = post(client, "/api/publish/batch/", {"messages": [*items, {"channel": "win", "message": {"content": 9}}]})
    assert [r["id"] for r in again.json()["results"]][:3] == ["k0", "k1", "k2"]
    assert len(bus.published["win"]) == 4  # three the first time, only the new one the second
    time.sleep(0.6)
    post(client, "/ws/send-to-channel", {"channel": "win", "message": {"id": "k0", "content": 0}})
    post(client, "/ws/send-to-channel", {"channel": "win", "message": {"id": "k0", "content": 0}})
    assert len(bus.published["win"]) == 5  # the window had passed: published once more, then deduplicated


async def test_a_duplicate_in_flight_waits_for_the_first_result(ws_app):
    results = await asyncio.gather(
        *(services.apublish_to_channel(channel="race", content=1, persist=True, message_id="same") for _ in range(5))
    )
    assert {(r.id, r.offset) for r in results} == {("same", 1)}
    assert await database_sync_to_async(ChannelMessage.objects.filter(channel_id="race").count)() == 1


async def test_a_websocket_client_may_retry_a_publish_by_its_id(connect):
    publisher, subscriber = await connect(), await connect()
    await request(subscriber, "subscribe", {"channel": "ws-retry"})
    data = {"channel": "ws-retry", "content": "once", "id": "client-1"}
    first = await request(publisher, "send_to_channel", data, "a")
    second = await request(publisher, "send_to_channel", data, "b")
    assert first["content"] == second["content"] == {"id": "client-1"}
    assert (await subscriber.receive_json_from(timeout=3))["id"] == "client-1"
    assert await subscriber.receive_nothing(timeout=0.3)
    await publisher.disconnect()
    await subscriber.disconnect()
