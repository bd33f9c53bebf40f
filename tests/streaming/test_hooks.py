"""Hooks, namespaces and connection signals in process: every kind of answer a hook may give,
per-channel options, and signals sent once (real processes: tests/e2e/test_application_decides.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.utils import timezone

from realtime_project.env import parse_namespaces
from streaming import history, namespaces, services, signals
from streaming.auth import authenticator
from streaming.hooks import Allow, HookContext, Refuse
from streaming.models import ChannelMessage, Connection, ServerProcess, Subscription
from streaming.registry import reap_dead
from tests.support.consumers import request

pytestmark = pytest.mark.django_db(transaction=True)

# What the hooks below answer, set by each test; every context they were given.
ANSWERS: dict[str, Any] = {}
CONTEXTS: list[HookContext] = []


async def answer(context: HookContext) -> Any:
    """An async hook answering ANSWERS[event] (a callable is called; an exception is raised)."""
    CONTEXTS.append(context)
    found = ANSWERS.get(context.event)
    if isinstance(found, BaseException):
        raise found
    if callable(found):
        found = found(context)
        if asyncio.iscoroutine(found):
            found = await found
    return found


def member_of_group(context: HookContext) -> Any:
    """A sync hook reading the ORM: `room:<name>` is for members of the group `<name>`."""
    CONTEXTS.append(context)
    room = context.channel.removeprefix("room:")
    if User.objects.filter(pk=context.user_id, groups__name=room).exists():
        return True
    return Refuse(f"You are not a member of {room}.")


@pytest.fixture(autouse=True)
def _fresh_answers():
    ANSWERS.clear()
    CONTEXTS.clear()


@pytest.fixture
def hooks(realtime):
    def configure(**events: str) -> None:
        realtime(**{f"realtime_{event}_hook": path for event, path in events.items()}, realtime_hook_timeout=0.5)

    return configure


def token(user_id: str, **claims: Any) -> str:
    return authenticator.create_access_token({"sub": user_id, **claims})


# ---------------------------------------------------------------------------------------------
# Subscribe


@pytest.mark.parametrize(
    ("channel", "given", "outcome"),
    [
        ("news", None, "subscribed"),  # no objection: the built-in rules allow a public channel
        ("private-ops", None, "forbidden"),  # no objection is not a grant
        ("private-ops", True, "subscribed"),  # an explicit yes opens a protected channel
        ("private-ops", Allow(), "subscribed"),
        ("news", False, "forbidden"),
        ("news", Refuse("Room is full."), "forbidden"),
        ("news", Refuse("Closed for maintenance."), "raised"),
        ("news", "yes", "unavailable"),  # an answer the server does not understand
        ("news", RuntimeError("bug in the hook"), "unavailable"),
    ],
)
async def test_a_subscribe_hook_answer_decides(connect, hooks, channel, given, outcome):
    hooks(subscribe="tests.streaming.test_hooks.answer")
    if outcome == "raised":
        ANSWERS["subscribe"] = given  # an exception in ANSWERS is raised by the hook
        outcome = "forbidden"
    elif isinstance(given, Refuse):
        ANSWERS["subscribe"] = lambda context: given  # returned, not raised
    else:
        ANSWERS["subscribe"] = given
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": channel})
    if outcome == "subscribed":
        assert reply["type"] == "subscribed" and reply["content"]["channel"] == channel
    else:
        assert reply["type"] == "error" and reply["content"]["type"] == outcome
        if isinstance(given, Refuse):
            assert reply["content"]["error"] == given.reason
    (context,) = CONTEXTS
    assert (context.event, context.channel, context.transport) == ("subscribe", channel, "ws")
    assert context.connection_id == communicator.greeting["data"]["connection_id"]
    await communicator.disconnect()


async def test_a_hook_that_does_not_answer_in_time_refuses_that_request_only(connect, hooks):
    hooks(subscribe="tests.streaming.test_hooks.answer")
    ANSWERS["subscribe"] = lambda context: asyncio.sleep(5 if context.channel == "slow" else 0)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "slow"})
    assert reply["content"]["type"] == "unavailable" and "in time" in reply["content"]["error"]
    reply = await request(communicator, "subscribe", {"channel": "fast"})
    assert reply["type"] == "subscribed"
    await communicator.disconnect()


async def test_a_sync_hook_runs_off_the_loop_and_reads_the_orm(connect, hooks):
    hooks(subscribe="tests.streaming.test_hooks.member_of_group")

    def members() -> None:
        alice = User.objects.create(username="alice")
        alice.groups.create(name="lobby")
        User.objects.create(username="bob")

    await database_sync_to_async(members)()
    alice, bob = await database_sync_to_async(lambda: [str(u.pk) for u in User.objects.order_by("username")])()
    member = await connect(f"token={token(alice)}")
    stranger = await connect(f"token={token(bob)}")
    assert (await request(member, "subscribe", {"channel": "room:lobby"}))["type"] == "subscribed"
    refused = await request(stranger, "subscribe", {"channel": "room:lobby"})
    assert refused["content"] == {"type": "forbidden", "error": "You are not a member of lobby."}
    await services.apublish_to_channel(channel="room:lobby", content="hello")
    assert (await member.receive_json_from())["content"] == "hello"
    assert await stranger.receive_nothing(timeout=0.2)
    for communicator in (member, stranger):
        await communicator.disconnect()


async def test_the_subscribe_hook_also_guards_history_and_presence(connect, hooks):
    hooks(subscribe="tests.streaming.test_hooks.answer")
    ANSWERS["subscribe"] = Refuse("Not yours.")
    communicator = await connect()
    for action in ("history", "presence"):
        reply = await request(communicator, action, {"channel": "secret"})
        assert reply["content"] == {"type": "forbidden", "error": "Not yours."}
    await communicator.disconnect()


# ---------------------------------------------------------------------------------------------
# Connect and server-side subscriptions


async def test_a_connect_hook_adds_server_side_channels_and_info(connect, hooks):
    hooks(connect="tests.streaming.test_hooks.answer")
    ANSWERS["connect"] = lambda context: Allow(channels=[f"feed:{context.user_id}", "bad name"], info={"plan": "pro"})
    communicator = await connect(f"token={token('u1', subs=['alerts'])}")
    data = communicator.greeting["data"]
    assert data["channels"] == ["alerts", "feed:u1"]
    assert set(data["refused"]) == {"bad name"}
    assert data["info"] == {"plan": "pro"}
    await services.apublish_to_channel(channel="feed:u1", content="for you")
    assert (await communicator.receive_json_from())["content"] == "for you"
    (context,) = CONTEXTS
    assert context.event == "connect" and context.claims["subs"] == ["alerts"]
    await communicator.disconnect()


async def test_server_side_channels_are_authorized_like_explicit_ones(connect, hooks):
    hooks(subscribe="tests.streaming.test_hooks.answer")
    ANSWERS["subscribe"] = lambda context: Refuse("No.") if context.channel == "vip" else None
    communicator = await connect(f"token={token('u1', subs=['vip', 'open', 'private-x', 'user:someone'])}")
    data = communicator.greeting["data"]
    assert data["channels"] == ["open"]
    assert data["refused"]["vip"] == "No."
    assert "claim lists it" in data["refused"]["private-x"]
    assert "only for its own user" in data["refused"]["user:someone"]
    await communicator.disconnect()


@pytest.mark.parametrize(("given", "code"), [(Refuse("Banned."), 4403), (TimeoutError(), 1013)])
async def test_a_connect_hook_refusal_closes_with_its_code_and_reason(ws_app, hooks, given, code):
    from channels.testing import WebsocketCommunicator

    hooks(connect="tests.streaming.test_hooks.answer")
    ANSWERS["connect"] = given
    communicator = WebsocketCommunicator(ws_app, "/ws/connect")
    connected, _ = await communicator.connect()
    assert connected  # accepted first, so the client can read why
    closed = await communicator.receive_output()
    assert closed["type"] == "websocket.close" and closed["code"] == code
    if isinstance(given, Refuse):
        assert closed["reason"] == "Banned."


# ---------------------------------------------------------------------------------------------
# Publish


async def test_a_publish_hook_may_replace_the_content_or_refuse(connect, hooks):
    hooks(publish="tests.streaming.test_hooks.answer")
    ANSWERS["publish"] = lambda context: (
        Refuse("No shouting.")
        if context.content == "HEY"
        else Allow(content={"text": context.content, "checked": True})
    )
    communicator = await connect()
    await request(communicator, "subscribe", {"channel": "chat"})
    await communicator.send_json_to({"action": "send_to_channel", "data": {"channel": "chat", "content": "hi"}})
    frames = [await communicator.receive_json_from() for _ in range(2)]  # the ack and the delivery
    assert sorted(frame["type"] for frame in frames) == ["ack", "text"]
    (delivered,) = [frame for frame in frames if frame["type"] == "text"]
    assert delivered["content"] == {"text": "hi", "checked": True}
    refused = await request(communicator, "send_to_channel", {"channel": "chat", "content": "HEY"})
    assert refused["content"] == {"type": "forbidden", "error": "No shouting."}
    assert await communicator.receive_nothing(timeout=0.2)
    (first, _) = CONTEXTS
    assert (first.event, first.channel, first.type, first.content) == ("publish", "chat", "text", "hi")
    await communicator.disconnect()


async def test_the_http_publish_api_is_trusted_and_skips_the_publish_hook(client, hooks):
    hooks(publish="tests.streaming.test_hooks.answer")
    ANSWERS["publish"] = Refuse("never")
    response = await database_sync_to_async(client.post)(
        "/ws/send-to-channel", {"channel": "chat", "message": {"content": 1}}, content_type="application/json"
    )
    assert response.status_code == 202 and CONTEXTS == []


# ---------------------------------------------------------------------------------------------
# Namespaces


def test_the_first_matching_namespace_wins_over_the_global_settings(realtime):
    realtime(
        channel_namespaces=parse_namespaces(
            {"chat:vip:*": {"history_size": 50}, "chat:*": {"history_size": 3, "client_publish": False}}
        ),
        channel_history_size=100,
    )
    assert namespaces.options("chat:vip:1").history_size == 50
    assert namespaces.options("chat:vip:1").client_publish is True  # not set there: the global value
    assert namespaces.options("chat:1").history_size == 3 and not namespaces.options("chat:1").client_publish
    assert namespaces.options("news").history_size == 100 and namespaces.options("news").namespace is None
    assert namespaces.options("presence-room").join_leave and not namespaces.options("news").join_leave


def test_history_keeps_each_namespace_size_and_ttl(realtime):
    realtime(channel_namespaces=parse_namespaces({"short:*": {"history_size": 2, "history_ttl": 60}}))
    for channel in ("short:a", "long"):
        for n in range(4):
            services.publish_to_channel(channel=channel, content=n, persist=True)
    assert [m["content"] for m in history.history_read("short:a").messages] == [2, 3]
    assert [m["content"] for m in history.history_read("long").messages] == [0, 1, 2, 3]
    ChannelMessage.objects.update(created_at=timezone.now() - timedelta(seconds=120))
    assert history.history_expire() == 2  # the short namespace's two; the global TTL keeps the rest
    assert ChannelMessage.objects.filter(channel_id="long").count() == 4


async def test_namespace_options_apply_to_websocket_clients(connect, realtime):
    realtime(
        channel_namespaces=parse_namespaces(
            {
                "chat:*": {"client_publish": False, "anonymous": False, "join_leave": True},
                "live:*": {"presence": False, "recover": False},
            }
        )
    )
    anonymous = await connect()
    reply = await request(anonymous, "subscribe", {"channel": "chat:1"})
    assert reply["content"]["type"] == "forbidden" and "authenticated" in reply["content"]["error"]
    user = await connect(f"token={token('u1')}")
    reply = await request(user, "subscribe", {"channel": "chat:1"})
    assert reply["type"] == "subscribed"
    joined = await user.receive_json_from()
    assert joined["type"] == "presence" and joined["content"]["event"] == "join"
    reply = await request(user, "send_to_channel", {"channel": "chat:1", "content": "x"})
    assert reply["content"] == {"type": "forbidden", "error": "Clients may not publish to channel 'chat:1'."}
    refused = await request(user, "presence", {"channel": "live:1"})
    assert refused["content"]["type"] == "forbidden"
    counts = await request(user, "presence", {"channel": "live:1", "counts_only": True})
    assert counts["content"] == {"channel": "live:1", "connections": 0, "user_count": 0}
    for n in range(2):
        await services.apublish_to_channel(channel="live:1", content=n, persist=True)
    reply = await request(user, "subscribe", {"channel": "live:1", "since": 0})
    assert reply["content"]["recovered"] is False and reply["content"]["offset"] == 2
    assert await user.receive_nothing(timeout=0.2)  # recover off: nothing replayed
    for communicator in (anonymous, user):
        await communicator.disconnect()


# ---------------------------------------------------------------------------------------------
# Signals


@pytest.fixture
def heard():
    """Every connection signal sent during the test, as (signal name, kwargs)."""
    events: list[tuple[str, dict]] = []
    receivers = {}
    for name in ("connected", "disconnected", "subscribed", "unsubscribed"):

        def receiver(sender, _name=name, **kwargs):
            events.append((_name, {**kwargs, "sender": sender}))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver, weak=False)
    yield events
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


async def test_signals_follow_a_connection_through_its_life(connect, heard):
    communicator = await connect(f"token={token('u1', subs=['alerts'])}")
    await request(communicator, "subscribe", {"channel": "news"})
    await request(communicator, "unsubscribe", {"channel": "news"})
    await communicator.disconnect()
    await asyncio.sleep(0.2)
    names = [(name, kwargs.get("channel")) for name, kwargs in heard]
    assert names == [
        ("connected", None),
        ("subscribed", "alerts"),
        ("subscribed", "news"),
        ("unsubscribed", "news"),
        ("unsubscribed", "alerts"),
        ("disconnected", None),
    ]
    connection_id = communicator.greeting["data"]["connection_id"]
    assert all(kwargs["connection_id"] == connection_id and kwargs["sender"] == "ws" for _, kwargs in heard)
    assert heard[0][1]["identity"].user_id == "u1" and heard[0][1]["channels"] == ["alerts"]
    assert heard[-1][1]["reaped"] is False


def test_the_connections_of_a_dead_process_are_announced_once_by_their_reaper(heard):
    old = timezone.now() - timedelta(minutes=10)
    process = ServerProcess.objects.create(
        id="dead", bus_channel="x", hostname="h", pid=1, started_at=old, last_heartbeat=old
    )
    Connection.objects.create(
        id="c1", transport="sse", user_id="u7", auth="jwt", process=process, connected_at=old, last_seen=old
    )
    Subscription.objects.create(connection_id="c1", channel="news")
    assert reap_dead(60) == 1
    assert reap_dead(60) == 0  # claimed already: nothing is announced twice
    assert [(name, kwargs.get("channel")) for name, kwargs in heard] == [
        ("unsubscribed", "news"),
        ("disconnected", None),
    ]
    assert all(kwargs["reaped"] and kwargs["sender"] == "sse" for _, kwargs in heard)
    assert heard[1][1]["identity"].user_id == "u7" and heard[1][1]["code"] == 1006
