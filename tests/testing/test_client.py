"""The test kit's in-process client (`realtime_client`) against the project's ASGI application."""

from __future__ import annotations

import pytest

from streaming import services
from streaming.testing import ConnectionClosed, RealtimeTestClient, ReplyError, make_token


async def test_greeting_identity_and_ping(realtime_client):
    async with realtime_client(user_id="alice", claims={"name": "Alice"}) as client:
        assert client.greeting["type"] == "connected"
        assert client.user_id == "alice" and client.connection_id
        assert set(await client.ping()) == {"timestamp"}
        reply = await client.request("ping")
        assert reply["type"] == "pong" and reply["request_id"].startswith("t")
    async with realtime_client() as anonymous:
        assert anonymous.user_id is None


async def test_subscribe_publish_receive_between_two_clients(realtime_client, realtime_published):
    async with realtime_client(user_id="alice") as alice, realtime_client(user_id="bob") as bob:
        subscribed = await bob.subscribe("room")
        assert subscribed["channel"] == "room" and subscribed["recovered"] is False
        ack = await alice.publish("room", {"text": "hi"}, type="chat")
        envelope = await bob.receive_message(channel="room")
        assert envelope["id"] == ack["id"] and envelope["type"] == "chat" and envelope["content"] == {"text": "hi"}
        assert envelope["sender"]["user_id"] == "alice"
        await alice.assert_no_message()  # alice is not subscribed
        realtime_published.assert_published(channel="room", type="chat", sender=lambda s: s["user_id"] == "alice")

        await bob.unsubscribe("room")
        await alice.publish("room", "unheard")
        await bob.assert_no_message(channel="room")


async def test_a_server_side_publish_reaches_the_client(realtime_client):
    async with realtime_client(user_id="u1") as client:
        await client.subscribe("news")
        await services.apublish_to_channel(channel="news", content={"title": "t"}, type="news_update")
        assert (await client.receive_message("news", type="news_update"))["content"] == {"title": "t"}
        await services.apublish_to_user(user_id="u1", content="personal")
        assert (await client.receive_message())["channel"] == "user:u1"


async def test_persisted_publishes_history_and_resume(realtime_client):
    async with realtime_client() as writer:
        acks = [await writer.publish("log", {"n": n}, persist=True) for n in range(3)]
        assert [ack["offset"] for ack in acks] == [1, 2, 3]
        page = await writer.history("log", since=1)
        assert [m["content"] for m in page["messages"]] == [{"n": 1}, {"n": 2}]
        assert page["offset"] == 3 and page["epoch"]

    async with realtime_client() as reader:
        subscribed = await reader.subscribe("log", since=1, epoch=page["epoch"])
        assert subscribed["recovered"] is True
        replayed = [await reader.receive_message("log") for _ in range(2)]
        assert [m["offset"] for m in replayed] == [2, 3]


async def test_other_channels_stay_queued_while_one_is_awaited(realtime_client):
    async with realtime_client() as client:
        for channel in ("a", "b"):
            await client.subscribe(channel)
        await services.apublish_to_channel(channel="a", content=1)
        await services.apublish_to_channel(channel="b", content=2)
        assert (await client.receive_message("b"))["content"] == 2
        assert (await client.receive_message())["content"] == 1
        with pytest.raises(AssertionError, match="expected no message, got"):
            await services.apublish_to_channel(channel="a", content=3)
            await client.assert_no_message()
        with pytest.raises(TimeoutError, match="no a message on 'c'"):
            await client.receive_message("c", timeout=0.1)


async def test_presence_of_a_presence_channel(realtime_client):
    claims = {"channels": ["presence-*"]}
    async with (
        realtime_client(user_id="alice", claims=claims) as alice,
        realtime_client(user_id="bob", claims=claims) as bob,
    ):
        await alice.subscribe("presence-lobby")
        await bob.subscribe("presence-lobby")
        presence = await alice.presence("presence-lobby")
        assert presence["user_count"] == 2 and sorted(presence["users"]) == ["alice", "bob"]
        assert "users" not in await bob.presence("presence-lobby", counts_only=True)


async def test_an_error_reply_raises_a_typed_error(realtime_client):
    async with realtime_client() as client:
        with pytest.raises(ReplyError) as refused:
            await client.subscribe("private-team")
        assert refused.value.code == "forbidden" and refused.value.frame["type"] == "error"
        with pytest.raises(ReplyError) as invalid:
            await client.subscribe("no spaces")
        assert invalid.value.code == "invalid_channel"
        with pytest.raises(ReplyError) as unknown:
            await client.request("no_such_action")
        assert unknown.value.code == "unknown_action"
        with pytest.raises(ReplyError) as no_snapshot:
            await client.snapshot("plain-channel")
        assert no_snapshot.value.code == "not_found"
        assert set(await client.ping()) == {"timestamp"}  # the connection goes on


async def test_a_refused_connection_raises_connection_closed(realtime_client, realtime):
    with pytest.raises(ConnectionClosed) as closed:
        async with realtime_client("not-a-token"):
            pass
    assert closed.value.code == 4401
    realtime(websocket_auth_required=True)
    with pytest.raises(ConnectionClosed) as closed:
        await realtime_client().connect()
    assert closed.value.code == 4401
    async with realtime_client(make_token("u2")) as client:
        assert client.user_id == "u2"


async def test_refresh_and_raw_frames(realtime_client):
    async with realtime_client(user_id="u3") as client:
        refreshed = await client.refresh(make_token("u3", expires_minutes=60))
        assert "expires_at" in refreshed
        await client.send_text("not json")
        error = await client.receive()
        assert error["type"] == "error" and error["content"]["type"] == "invalid_json"


async def test_the_client_works_without_the_fixture(realtime_asgi_app, transactional_db):
    client = RealtimeTestClient(realtime_asgi_app, token=make_token("u4"), timeout=5)
    greeting = await client.connect()
    assert greeting["data"]["user_id"] == "u4"
    await client.close()
    with pytest.raises(ConnectionClosed):
        await client.ping()
