"""The WebSocket client against a real daphne process: every request, handlers, errors, auth."""

from __future__ import annotations

import asyncio
import uuid
from unittest.mock import ANY

import pytest
from realtime_client import (
    AuthenticationFailed,
    ClientState,
    NotConnected,
    ReplyError,
    RequestTimeout,
    WebSocketClient,
    create_ws_client,
)

from tests.support.polling import eventually, publish, refusals, token_for

pytestmark = pytest.mark.server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def keyed_server(live_server_factory):
    """A server that requires credentials and accepts one API key (long enough that no random id in a log contains it)."""
    return live_server_factory(
        WS_API_KEYS="client-api-key-1-5f0c2a9e7b", WEBSOCKET_AUTH_REQUIRED="true", SSE_AUTH_REQUIRED="true"
    )


async def test_connect_greets_and_reports_the_connection(live_server, make_client):
    client = make_client(WebSocketClient, live_server)
    greetings, contexts = [], []
    client.on_message("connected")(greetings.append)
    client.on_connect(contexts.append)
    assert client.state is ClientState.DISCONNECTED

    await client.connect()

    assert client.state is ClientState.CONNECTED
    assert client.connection.heartbeat_interval == 30
    assert client.connection.user_id is None
    await eventually(lambda: greetings and contexts, what="greeting and on_connect")
    assert greetings[0]["data"]["connection_id"] == client.connection.connection_id
    assert contexts[0].connection_id == client.connection.connection_id
    assert contexts[0].reconnected is False


async def test_ping_returns_the_round_trip_in_seconds(live_server, make_client):
    client = make_client(WebSocketClient, live_server)
    await client.connect()
    round_trip = await client.ping()
    assert 0 < round_trip < 1


async def test_subscribed_channel_messages_reach_sync_async_and_wildcard_handlers(live_server, make_client):
    channel = unique("room")
    listener, sender = make_client(WebSocketClient, live_server), make_client(WebSocketClient, live_server)
    chats, texts, everything = [], [], []

    @listener.on_message("chat")
    async def on_chat(envelope):
        await asyncio.sleep(0)
        chats.append(envelope)

    listener.on_message("text")(texts.append)
    listener.on_message("*")(lambda frame: everything.append(frame["type"]))
    await listener.connect()
    await sender.connect()

    reply = await listener.subscribe_to_channel(channel)
    ack = await sender.send_to_channel(channel, {"n": 1}, type="chat")

    assert reply == {"channel": channel, "offset": 0, "epoch": ANY, "recovered": False}
    await eventually(lambda: chats, what="the chat message")
    assert chats[0]["id"] == ack["id"]
    assert chats[0]["content"] == {"n": 1}
    assert chats[0]["sender"]["connection_id"] == sender.connection.connection_id
    assert texts == []
    assert everything[:3] == ["connected", "subscribed", "chat"]
    assert listener.channels == [channel]


async def test_unsubscribe_stops_delivery_and_restoration(live_server, make_client):
    left, kept = unique("left"), unique("kept")
    client, sender = make_client(WebSocketClient, live_server), make_client(WebSocketClient, live_server)
    received = []
    client.on_message("text")(lambda envelope: received.append(envelope["channel"]))
    await client.connect()
    await sender.connect()
    await client.subscribe_to_channel(left)
    await client.subscribe_to_channel(kept)

    assert await client.unsubscribe_from_channel(left) == {"channel": left}
    await sender.send_to_channel(left, "not for you")
    await sender.send_to_channel(kept, "sentinel")

    await eventually(lambda: kept in received, what="the sentinel")
    assert received == [kept]
    assert client.channels == [kept]


async def test_persisted_publish_acks_an_offset_history_pages_and_new_subscribers_get_it(live_server, make_client):
    channel = unique("log")
    client, late = make_client(WebSocketClient, live_server), make_client(WebSocketClient, live_server)
    await client.connect()
    acks = [await client.send_to_channel(channel, f"entry {n}", persist=True) for n in (1, 2, 3)]

    assert [ack["offset"] for ack in acks] == [1, 2, 3]
    page = await client.history(channel, since=1, limit=1)
    assert [message["content"] for message in page["messages"]] == ["entry 2"]
    assert page["recovered"] is True and page["has_more"] is True and page["offset"] == 3

    replayed = []
    late.on_message("text")(replayed.append)
    await late.connect()
    await late.subscribe_to_channel(channel)
    await eventually(lambda: len(replayed) == 3, what="the retained history")
    assert [envelope["id"] for envelope in replayed] == [ack["id"] for ack in acks]
    assert late.offsets == {channel: 3}


async def test_send_to_user_reaches_every_connection_of_that_user(live_server, make_client):
    user = unique("alice")
    alice_phone = make_client(WebSocketClient, live_server, token=token_for(user))
    alice_laptop = make_client(WebSocketClient, live_server, token=token_for(user))
    bob = make_client(WebSocketClient, live_server)
    got = []
    for device in (alice_phone, alice_laptop):
        device.on_message("dm")(got.append)
        await device.connect()
    await bob.connect()

    ack = await bob.send_to_user(user, "hi alice", type="dm")

    await eventually(lambda: len(got) == 2, what="both of alice's connections")
    assert {envelope["id"] for envelope in got} == {ack["id"]}
    assert got[0]["channel"] == f"user:{user}"
    assert alice_phone.connection.user_id == user


async def test_send_message_is_echoed_to_the_sender_with_the_ack_id(live_server, make_client):
    client = make_client(WebSocketClient, live_server)
    echoes = []
    client.on_message("message")(echoes.append)
    await client.connect()

    ack = await client.send_message({"hello": "server"})

    await eventually(lambda: echoes, what="the echo")
    assert echoes[0]["id"] == ack["id"]
    assert echoes[0]["content"] == {"hello": "server"}


async def test_presence_counts_the_channel_subscribers(live_server, make_client):
    channel = unique("lobby")
    first, second = make_client(WebSocketClient, live_server), make_client(WebSocketClient, live_server)
    for client in (first, second):
        await client.connect()
        await client.subscribe_to_channel(channel)

    presence = await first.presence(channel)

    assert presence["channel"] == channel
    assert presence["connections"] == 2


async def test_refresh_token_replaces_the_credentials_used_for_reconnecting(live_server, make_client):
    user = unique("carol")
    client = make_client(WebSocketClient, live_server, token=token_for(user))
    await client.connect()
    fresh = token_for(user, name="Carol")

    reply = await client.refresh_token(fresh)

    assert isinstance(reply["expires_at"], float)
    assert client.endpoint.token == fresh
    with pytest.raises(ReplyError) as refused:
        await client.refresh_token(token_for(unique("mallory")))
    assert refused.value.code == "forbidden"
    assert client.endpoint.token == fresh


async def test_error_replies_raise_reply_error_and_reach_the_design_documents_error_handler(live_server, make_client):
    client = make_client(WebSocketClient, live_server)
    seen = []

    @client.on_message("error")
    async def handle_error(data):
        error_type = data.get("content", {}).get("type")
        error_message = data.get("content", {}).get("error")
        seen.append((error_type, error_message))

    await client.connect()
    with pytest.raises(ReplyError) as invalid:
        await client.subscribe_to_channel("not a channel!")
    with pytest.raises(ReplyError) as forbidden:
        await client.subscribe_to_channel("private-payroll")

    assert invalid.value.code == "invalid_channel"
    assert forbidden.value.code == "forbidden" and "private-payroll" in forbidden.value.detail
    await eventually(lambda: len(seen) == 2, what="both error frames")
    assert [code for code, _ in seen] == ["invalid_channel", "forbidden"]
    assert client.channels == []  # a refused subscription is not restored later


async def test_a_request_without_reply_times_out(live_server, make_client):
    client = make_client(WebSocketClient, live_server)
    await client.connect()
    with pytest.raises(RequestTimeout) as timeout:
        await client.request("pong", timeout=0.2)  # the server never answers a heartbeat pong
    assert isinstance(timeout.value, TimeoutError)
    assert await client.ping() > 0  # the connection is still usable


async def test_requests_need_a_connection(live_server, make_client):
    client = make_client(WebSocketClient, live_server)
    with pytest.raises(NotConnected):
        await client.ping()


async def test_a_handler_can_await_requests_without_blocking_the_reader(live_server, make_client):
    channel = unique("echo")
    client = make_client(WebSocketClient, live_server)
    answers = []

    @client.on_message("text")
    async def answer(envelope):
        if envelope["content"] == "question":
            answers.append(await client.send_to_channel(channel, "answer"))

    await client.connect()
    await client.subscribe_to_channel(channel)
    await client.send_to_channel(channel, "question")

    await eventually(lambda: answers, what="the handler's own request")
    assert "id" in answers[0]


async def test_a_failing_handler_is_reported_to_on_error_and_later_handlers_still_run(live_server, make_client):
    channel = unique("faulty")
    client = make_client(WebSocketClient, live_server)
    errors, after = [], []

    @client.on_message("text")
    def broken(envelope):
        raise RuntimeError("handler bug")

    client.on_message("text")(after.append)
    client.on_error(errors.append)
    await client.connect()
    await client.subscribe_to_channel(channel)
    await client.send_to_channel(channel, "x")

    await eventually(lambda: after and errors, what="the error report")
    assert isinstance(errors[0].error, RuntimeError)
    assert "text" in errors[0].while_doing


async def test_messages_iterates_envelopes_until_disconnect(live_server, make_client):
    channel = unique("feed")
    client = make_client(WebSocketClient, live_server)
    await client.connect()
    messages = client.messages()
    await client.subscribe_to_channel(channel)
    for n in range(3):
        publish(live_server, channel, n)

    received = []
    async for envelope in messages:
        received.append(envelope["content"])
        if len(received) == 3:
            await client.disconnect()
    assert received == [0, 1, 2]


async def test_duplicate_envelopes_are_dropped_by_id(live_server, make_client):
    channel = unique("dup")
    publish(live_server, channel, "one", persist=True)
    publish(live_server, channel, "two", persist=True)
    client = make_client(WebSocketClient, live_server)
    received, pongs = [], []
    client.on_message("message")(received.append)
    client.on_message("pong")(pongs.append)
    await client.connect()
    await client.subscribe_to_channel(channel)
    await eventually(lambda: len(received) == 2, what="the history")

    again = await client.subscribe_to_channel(channel, since=0)  # the server replays both again
    await client.ping()  # its reply follows the replayed envelopes, and callbacks run in order:
    await eventually(lambda: pongs, what="the pong callback")  # any replay would be handled by now

    assert again["recovered"] is True
    assert [envelope["content"] for envelope in received] == ["one", "two"]
    assert client.offsets[channel] == 2


async def test_async_with_connects_then_disconnects(live_server, make_client):
    async with make_client(WebSocketClient, live_server) as client:
        assert client.state is ClientState.CONNECTED
        assert await client.ping() > 0
    assert client.state is ClientState.CLOSED


async def test_disconnect_closes_normally_and_ends_the_client(live_server, make_client):
    client = make_client(WebSocketClient, live_server)
    contexts = []
    client.on_disconnect(contexts.append)
    await client.connect()

    await client.disconnect()

    assert client.state is ClientState.CLOSED
    assert [(c.code, c.reconnecting, c.error) for c in contexts] == [(1000, False, None)]
    await client.wait_closed()  # no error to raise
    with pytest.raises(NotConnected):
        await client.ping()


async def test_api_key_and_token_authenticate_where_auth_is_required(keyed_server, make_client):
    by_key = make_client(WebSocketClient, keyed_server, api_key="client-api-key-1-5f0c2a9e7b")
    by_token = make_client(WebSocketClient, keyed_server, token=token_for("dave"))
    await by_key.connect()
    await by_token.connect()
    assert by_token.connection.user_id == "dave"
    assert await by_key.ping() > 0


@pytest.mark.parametrize(
    "credentials", [{}, {"token": "not-a-jwt"}, {"api_key": "wrong"}], ids=["none", "bad-token", "bad-key"]
)
async def test_missing_or_bad_credentials_fail_at_once_without_retrying(keyed_server, make_client, credentials):
    client = make_client(WebSocketClient, keyed_server, max_reconnect_attempts=5, **credentials)
    before = refusals(keyed_server, "ws")

    with pytest.raises(AuthenticationFailed) as refused:
        await client.connect()

    assert refused.value.code == 4401
    assert client.state is ClientState.DISCONNECTED
    await asyncio.sleep(0.3)  # long enough for several retries at a 0.1 s backoff, if there were any
    assert refusals(keyed_server, "ws") == before + 1


def test_create_ws_client_takes_the_design_documents_arguments():
    client = create_ws_client(
        host="localhost", port=8000, token="t", auto_reconnect=True, max_reconnect_attempts=10, reconnect_interval=5
    )
    assert client.url == "ws://localhost:8000/ws/connect"
    assert client.endpoint.headers() == {"Authorization": "Bearer t"}
    assert (client.auto_reconnect, client.max_reconnect_attempts, client.backoff.initial) == (True, 10, 5)
    assert create_ws_client(host="example.org", port=443, secure=True).url == "wss://example.org:443/ws/connect"


async def test_publish_batch_and_a_retried_publish_by_id(keyed_server, make_client):
    channel = unique("batched")
    client = make_client(WebSocketClient, keyed_server, api_key="client-api-key-1-5f0c2a9e7b")
    received = []
    client.on_message("*")(lambda envelope: received.append(envelope) if envelope.get("channel") == channel else None)
    await client.connect()
    await client.subscribe_to_channel(channel)
    results = await client.publish_batch(
        [
            {"channel": channel, "content": 1, "persist": True},
            {"channel": channel, "content": 2, "type": "note", "id": "b-2"},
            {"user_id": "nobody", "content": 3},
        ]
    )
    assert results[0]["offset"] == 1 and results[1] == {"id": "b-2"} and "offset" not in results[2]
    first = await client.send_to_channel(channel, "once", id="retry-1")
    again = await client.send_to_channel(channel, "once", id="retry-1")  # the ack was "lost": sent again
    assert first == again == {"id": "retry-1"}
    await eventually(lambda: len(received) == 3, what="the batch and the one retried message")
    await asyncio.sleep(0.3)
    assert [envelope["content"] for envelope in received] == [1, 2, "once"]
