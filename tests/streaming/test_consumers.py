"""The WebSocket consumer through WebsocketCommunicator: every action and every error."""

from __future__ import annotations

import asyncio
import json
from unittest.mock import ANY

import pytest

from streaming import protocol
from streaming.signals import client_message
from tests.support.consumers import request

pytestmark = pytest.mark.django_db(transaction=True)


async def test_connect_greeting_has_connection_id_and_heartbeat_interval(connect):
    communicator = await connect()
    data = communicator.greeting["data"]
    assert set(data) == {"connection_id", "user_id", "heartbeat_interval"}
    assert data["user_id"] is None
    assert data["heartbeat_interval"] == 30
    await communicator.disconnect()


async def test_ping_replies_pong_with_request_id(connect):
    communicator = await connect()
    reply = await request(communicator, "ping", request_id="abc")
    assert reply["type"] == "pong"
    assert reply["request_id"] == "abc"
    await communicator.disconnect()


async def test_pong_gets_no_reply(connect):
    communicator = await connect()
    await communicator.send_json_to({"action": "pong"})
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_subscribe_then_channel_publish_is_delivered_with_sender(connect):
    alice, bob = await connect(), await connect()
    for communicator in (alice, bob):
        reply = await request(communicator, "subscribe", {"channel": "test_channel"})
        assert reply == {
            "type": "subscribed",
            "content": {"channel": "test_channel", "offset": 0, "epoch": ANY, "recovered": False},
            "request_id": "r1",
        }
    await alice.send_json_to(
        {
            "action": "send_to_channel",
            "data": {"channel": "test_channel", "content": "Привет всем!"},
            "request_id": "r2",
        }
    )
    # the sender is subscribed too: it gets the ack and its own message, in either order
    frames = {frame["type"]: frame for frame in [await alice.receive_json_from(), await alice.receive_json_from()]}
    ack = frames["ack"]
    assert ack["request_id"] == "r2"
    assert frames["text"]["id"] == ack["content"]["id"]
    assert set(ack["content"]) == {"id"}
    received = await bob.receive_json_from(timeout=3)
    assert received["id"] == ack["content"]["id"]
    assert received["type"] == "text"
    assert received["channel"] == "test_channel"
    assert received["content"] == "Привет всем!"
    assert received["sender"] == {"user_id": None, "connection_id": alice.greeting["data"]["connection_id"]}
    assert received["offset"] is None
    assert received["timestamp"].endswith("Z")
    await alice.disconnect()
    await bob.disconnect()


async def test_sender_in_payload_is_ignored_server_stamps_it(connect):
    alice, bob = await connect(), await connect()
    await request(bob, "subscribe", {"channel": "room"})
    await alice.send_json_to(
        {"action": "send_to_channel", "data": {"channel": "room", "content": {"sender": "admin"}, "sender": "x"}}
    )
    reply = await alice.receive_json_from(timeout=3)
    assert reply["type"] == "error" and reply["content"]["type"] == "invalid_message"
    await request(alice, "send_to_channel", {"channel": "room", "content": {"sender": {"user_id": "admin"}}})
    received = await bob.receive_json_from(timeout=3)
    assert received["sender"]["connection_id"] == alice.greeting["data"]["connection_id"]
    assert received["sender"]["user_id"] is None
    await alice.disconnect()
    await bob.disconnect()


async def test_unsubscribe_stops_delivery(connect):
    alice, bob = await connect(), await connect()
    await request(bob, "subscribe", {"channel": "news"})
    reply = await request(bob, "unsubscribe", {"channel": "news"})
    assert reply["type"] == "unsubscribed" and reply["content"] == {"channel": "news"}
    await request(alice, "send_to_channel", {"channel": "news", "content": "x"})
    assert await bob.receive_nothing(timeout=0.3)
    await alice.disconnect()
    await bob.disconnect()


async def test_broadcast_channel_cannot_be_left_or_published_by_clients(connect):
    communicator = await connect()
    reply = await request(communicator, "unsubscribe", {"channel": "broadcast"})
    assert reply["content"]["type"] == "forbidden"
    reply = await request(communicator, "send_to_channel", {"channel": "broadcast", "content": "x"})
    assert reply["content"]["type"] == "forbidden"
    await communicator.disconnect()


async def test_send_to_user_reaches_every_connection_of_that_user(connect):
    from streaming.auth import authenticator

    token = authenticator.create_access_token({"sub": "user123", "name": "Ivan"})
    first, second = await connect(f"token={token}"), await connect(f"token={token}")
    assert first.greeting["data"]["user_id"] == "user123"
    sender = await connect()
    ack = await request(sender, "send_to_user", {"user_id": "user123", "content": "Личное сообщение"})
    assert ack["type"] == "ack"
    for communicator in (first, second):
        received = await communicator.receive_json_from(timeout=3)
        assert received["channel"] == "user:user123"
        assert received["content"] == "Личное сообщение"
        assert received["type"] == "text"
    assert await sender.receive_nothing(timeout=0.2)
    for communicator in (first, second, sender):
        await communicator.disconnect()


async def test_message_action_echoes_to_own_connections_and_fires_signal(connect):
    from streaming.auth import authenticator

    seen = []

    def receiver(sender, connection_id, identity, content, envelope_id, **kwargs):
        seen.append((connection_id, identity.user_id, content))

    client_message.connect(receiver)
    try:
        token = authenticator.create_access_token({"sub": "u7"})
        first, second, other = await connect(f"token={token}"), await connect(f"token={token}"), await connect()
        await first.send_json_to({"action": "message", "data": {"content": "Hello from React!"}})
        frames = [await first.receive_json_from(timeout=3), await first.receive_json_from(timeout=3)]
        echo = next(f for f in frames if f["type"] == "message")
        assert echo["content"] == "Hello from React!"
        assert echo["sender"]["connection_id"] == first.greeting["data"]["connection_id"]
        assert (await second.receive_json_from(timeout=3))["id"] == echo["id"]
        assert await other.receive_nothing(timeout=0.2)
        assert seen == [(first.greeting["data"]["connection_id"], "u7", "Hello from React!")]
        for communicator in (first, second, other):
            await communicator.disconnect()
    finally:
        client_message.disconnect(receiver)


async def test_anonymous_message_echoes_to_this_connection_only(connect):
    first, other = await connect(), await connect()
    await first.send_json_to({"action": "message", "data": {"content": "hi"}})
    frames = [await first.receive_json_from(timeout=3), await first.receive_json_from(timeout=3)]
    assert {f["type"] for f in frames} == {"message", "ack"}
    assert await other.receive_nothing(timeout=0.2)
    await first.disconnect()
    await other.disconnect()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{bad json", "invalid_json"),
        ("[" * 5000, "invalid_json"),
        ('"\\ud800"', "invalid_json"),
        ("1" * 5000, "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('{"data": {}}', "invalid_message"),
        ('{"action": 5}', "invalid_message"),
        ('{"action": "fly"}', "unknown_action"),
        ('{"action": "subscribe"}', "invalid_message"),
        ('{"action": "subscribe", "data": []}', "invalid_message"),
        ('{"action": "subscribe", "data": {"channel": "bad channel!"}}', "invalid_channel"),
        ('{"action": "subscribe", "data": {"channel": ""}}', "invalid_channel"),
        ('{"action": "subscribe", "data": {"channel": "' + "a" * 101 + '"}}', "invalid_channel"),
        ('{"action": "subscribe", "data": {"channel": "ok", "since": -1}}', "invalid_message"),
        ('{"action": "subscribe", "data": {"channel": "ok", "extra": 1}}', "invalid_message"),
        ('{"action": "send_to_channel", "data": {"channel": "ok"}}', "invalid_message"),
        (
            '{"action": "send_to_channel", "data": {"channel": "ok", "content": 1, "type": "bad type"}}',
            "invalid_message",
        ),
        ('{"action": "send_to_channel", "data": {"channel": "ok", "content": 1, "persist": "yes"}}', "invalid_message"),
        ('{"action": "send_to_user", "data": {"user_id": "a b", "content": 1}}', "invalid_message"),
        ('{"action": "history", "data": {"channel": "ok", "limit": 0}}', "invalid_message"),
        ('{"action": "ping", "request_id": {"x": 1}}', "invalid_message"),
        ('{"action": "ping", "surprise": true}', "invalid_message"),
    ],
)
async def test_bad_frames_get_typed_errors_and_connection_stays_open(connect, raw, code):
    communicator = await connect()
    await communicator.send_to(text_data=raw)
    reply = await communicator.receive_json_from(timeout=3)
    assert reply["type"] == "error", reply
    assert reply["content"]["type"] == code, reply
    assert isinstance(reply["content"]["error"], str) and reply["content"]["error"]
    assert (await request(communicator, "ping"))["type"] == "pong"
    await communicator.disconnect()


async def test_error_reply_carries_request_id_of_bad_frame(connect):
    communicator = await connect()
    await communicator.send_json_to({"action": "subscribe", "data": {"channel": "no way"}, "request_id": "q9"})
    reply = await communicator.receive_json_from(timeout=3)
    assert reply["request_id"] == "q9" and reply["content"]["type"] == "invalid_channel"
    await communicator.disconnect()


async def test_binary_frame_gets_invalid_message(connect):
    communicator = await connect()
    await communicator.send_to(bytes_data=b'{"action": "ping"}')
    reply = await communicator.receive_json_from(timeout=3)
    assert reply["content"]["type"] == "invalid_message"
    await communicator.disconnect()


async def test_frame_over_max_message_size_is_refused(connect, realtime):
    realtime(websocket_max_message_size=1024)
    communicator = await connect()
    await communicator.send_to(text_data=json.dumps({"action": "message", "data": {"content": "x" * 2000}}))
    reply = await communicator.receive_json_from(timeout=3)
    assert reply["content"]["type"] == "message_too_large"
    assert (await request(communicator, "ping"))["type"] == "pong"
    await communicator.disconnect()


async def test_bad_frame_does_not_affect_other_connections(connect):
    bad, good = await connect(), await connect()
    await request(good, "subscribe", {"channel": "calm"})
    for raw in ["{", "[" * 3000, "null", '{"action": 1}']:
        await bad.send_to(text_data=raw)
        assert (await bad.receive_json_from(timeout=3))["type"] == "error"
    await request(bad, "send_to_channel", {"channel": "calm", "content": "still here"})
    assert (await good.receive_json_from(timeout=3))["content"] == "still here"
    await bad.disconnect()
    await good.disconnect()


async def test_too_many_subscriptions(connect, realtime):
    realtime(max_subscriptions_per_connection=2)
    communicator = await connect()
    assert (await request(communicator, "subscribe", {"channel": "a"}))["type"] == "subscribed"
    assert (await request(communicator, "subscribe", {"channel": "b"}))["type"] == "subscribed"
    reply = await request(communicator, "subscribe", {"channel": "c"})
    assert reply["content"]["type"] == "too_many_subscriptions"
    # re-subscribing to a channel already held is not a new subscription
    assert (await request(communicator, "subscribe", {"channel": "a"}))["type"] == "subscribed"
    await communicator.disconnect()


async def test_presence_counts_connections_and_users(connect):
    from streaming.auth import authenticator

    token = authenticator.create_access_token({"sub": "alice"})
    alice, anonymous, outsider = await connect(f"token={token}"), await connect(), await connect()
    await request(alice, "subscribe", {"channel": "lobby"})
    await request(anonymous, "subscribe", {"channel": "lobby"})
    reply = await request(outsider, "presence", {"channel": "lobby"})
    assert reply["type"] == "presence"
    assert reply["content"] == {"channel": "lobby", "connections": 2, "user_count": 1, "users": ["alice"]}
    for communicator in (alice, anonymous, outsider):
        await communicator.disconnect()


async def test_heartbeat_sent_every_interval(connect, realtime):
    realtime(websocket_heartbeat_interval=0.2, websocket_disconnect_timeout=0)
    communicator = await connect()
    assert communicator.greeting["data"]["heartbeat_interval"] == 0.2
    first = await communicator.receive_json_from(timeout=2)
    second = await communicator.receive_json_from(timeout=2)
    assert first["type"] == second["type"] == "heartbeat"
    assert first["timestamp"] < second["timestamp"]
    await communicator.disconnect()


async def test_idle_connection_closed_with_4408(connect, realtime):
    realtime(websocket_heartbeat_interval=10, websocket_disconnect_timeout=0.4)
    communicator = await connect()
    closed = await communicator.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": 4408, "reason": "idle timeout"}


async def test_any_frame_keeps_connection_alive(connect, realtime):
    realtime(websocket_heartbeat_interval=10, websocket_disconnect_timeout=0.5)
    communicator = await connect()
    for _ in range(8):
        await asyncio.sleep(0.15)
        await communicator.send_json_to({"action": "pong"})
    assert (await request(communicator, "ping"))["type"] == "pong"
    await communicator.disconnect()


async def test_max_connections_accepts_then_closes_1013(connect, realtime):
    realtime(websocket_max_connections=2)
    first, second = await connect(), await connect()
    third = await connect(greet=False)
    closed = await third.receive_output(timeout=3)
    assert closed["type"] == "websocket.close" and closed["code"] == 1013
    assert "max connections" in closed["reason"]
    await first.disconnect()
    fourth = await connect()
    assert fourth.greeting["type"] == "connected"
    await second.disconnect()
    await fourth.disconnect()


async def test_slow_consumer_closed_with_4429_and_queue_bounded(connect, realtime):
    from streaming.runtime import get_runtime

    realtime(websocket_message_queue_size=5)
    communicator = await connect()
    await request(communicator, "subscribe", {"channel": "firehose"})
    runtime = get_runtime()
    (consumer,) = runtime.registry.connections.values()
    # Simulate a socket that stopped draining: the writer is stuck, the outbox fills.
    consumer.writer.cancel()
    for index in range(50):
        consumer.deliver(protocol.bus_message("firehose", protocol.encode({"n": index}), None, "text"))
    assert len(consumer.outbox) <= 5
    closed = None
    while closed is None or closed["type"] != "websocket.close":
        closed = await communicator.receive_output(timeout=3)
    assert closed["code"] == 4429


async def test_disconnect_leaves_hub_and_registry(connect):
    from streaming.runtime import get_runtime

    communicator = await connect()
    await request(communicator, "subscribe", {"channel": "gone"})
    runtime = get_runtime()
    assert runtime.hub.members("gone")
    await communicator.disconnect()
    assert not runtime.hub.members("gone")
    assert runtime.registry.count("ws") == 0


async def test_database_down_during_an_action_is_an_unavailable_reply_and_the_connection_stays(connect, monkeypatch):
    from django.db import OperationalError

    from streaming import consumers

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(consumers, "history_read", down)
    communicator = await connect()
    reply = await request(communicator, "history", {"channel": "news"})
    assert reply["type"] == "error" and reply["request_id"] == "r1"
    assert reply["content"]["type"] == "unavailable"
    assert reply["content"]["error"] == "The database is unavailable; try again."
    assert (await request(communicator, "ping"))["type"] == "pong"
    await communicator.disconnect()


async def test_subscribing_to_a_channel_without_history_reads_no_history(connect, monkeypatch):
    """After the process has anchored a channel at offset 0, a subscribe is answered without a query;
    once the channel has a persisted message, subscribers read history again (and get it)."""
    from streaming import hub, services

    reads = []
    real_history_read = hub.history_read
    monkeypatch.setattr(hub, "history_read", lambda *args: reads.append(args) or real_history_read(*args))
    first, second = await connect(), await connect()
    for communicator in (first, second):
        reply = await request(communicator, "subscribe", {"channel": "quiet"})
        assert reply["content"] == {"channel": "quiet", "offset": 0, "epoch": ANY, "recovered": False}
    assert reads == []
    await services.apublish_to_channel(channel="quiet", content="kept", persist=True)
    for communicator in (first, second):
        assert (await communicator.receive_json_from())["offset"] == 1
    late = await connect()
    reply = await request(late, "subscribe", {"channel": "quiet"})
    assert reply["content"]["offset"] == 1
    assert (await late.receive_json_from())["content"] == "kept"
    assert reads == [("quiet", None, None, None)]
    for communicator in (first, second, late):
        await communicator.disconnect()


@pytest.mark.parametrize("channel", ["a" * 100 + "\n", "news\n"])
async def test_subscribe_refuses_a_channel_with_a_trailing_newline(connect, channel):
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": channel})
    assert reply["type"] == "error" and reply["content"]["type"] == "invalid_channel"
    await communicator.disconnect()


@pytest.mark.parametrize("type_", ["notification\n", "stream-open", "connected\n"])
async def test_clients_cannot_publish_reserved_types_through_a_newline(connect, type_):
    communicator = await connect()
    reply = await request(communicator, "send_to_channel", {"channel": "c", "content": 1, "type": type_})
    assert reply["type"] == "error" and reply["content"]["type"] in ("invalid_message", "forbidden")
    await communicator.disconnect()


async def test_subscribe_since_replays_every_missed_message_over_several_bounded_pages(connect, realtime):
    from streaming import services

    realtime(history_page_max_bytes=2048)
    for n in range(7):
        await services.apublish_to_channel(channel="paged", content={"n": n, "pad": "x" * 700}, persist=True)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "paged", "since": 1})
    assert reply["content"] == {"channel": "paged", "offset": 7, "epoch": ANY, "recovered": True}
    replayed = [(await communicator.receive_json_from(timeout=3))["offset"] for _ in range(6)]
    assert replayed == [2, 3, 4, 5, 6, 7]
    await services.apublish_to_channel(channel="paged", content={"n": 7}, persist=True)
    assert (await communicator.receive_json_from(timeout=3))["offset"] == 8
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()
