"""End to end on real daphne processes: what the application decides — channel namespaces, the
connect/subscribe/publish hooks (tests/support/app_hooks.py), server-side subscriptions, the
connection signals across a cluster, stream epochs and history resets, presence counts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets

from tests.support.clients import SSEReader, WSClient
from tests.support.polling import eventually, publish, token_for
from tests.support.server import ADMIN_HEADERS, ROOT, LiveServer, base_env, migrate, sqlite_url
from tests.support.services import require_redis

pytestmark = pytest.mark.server

HOOKS = "tests.support.app_hooks"
HOOK_TIMEOUT = 1.0  # REALTIME_HOOK_TIMEOUT of the servers; the slow hooks sleep 3 s
NAMESPACES = {
    "hist-*": {"history_size": 3},
    "ro-*": {"client_publish": False},
    "members-*": {"anonymous": False},
    "quiet-*": {"presence": False},
    "lobby-*": {"join_leave": True},
    "norecover-*": {"recover": False},
}
# Users and Django auth groups of the subscribe hook: alice is in blue, dan in green, bob in none.
MEMBERSHIP = """
from django.contrib.auth.models import Group, User
blue, green = Group.objects.create(name="blue"), Group.objects.create(name="green")
User.objects.create_user("alice").groups.add(blue)
User.objects.create_user("dan").groups.add(green)
User.objects.create_user("bob")
"""


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def manage_shell(database_url: str, code: str) -> None:
    """Run ORM code against a test server's database (`manage.py shell -c`)."""
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=base_env(database_url), check=True, timeout=60
    )


def ws_url(server: LiveServer, user: str | None = None, **claims: Any) -> str:
    url = server.ws + "/ws/connect"
    return f"{url}?token={token_for(user, **claims)}" if user else url


def sse_url(server: LiveServer, *channels: str, user: str | None = None, **claims: Any) -> str:
    query = [f"channels={','.join(channels)}"] if channels else []
    if user:
        query.append(f"token={token_for(user, **claims)}")
    return server.http + "/sse/connect" + ("?" + "&".join(query) if query else "")


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


def error_of(frame: dict) -> tuple[str, str]:
    """(type, reason) of a WebSocket error reply, checking its shape."""
    assert frame["type"] == "error", frame
    assert set(frame) == {"type", "content", "request_id"}, frame
    assert set(frame["content"]) == {"type", "error"}, frame
    return frame["content"]["type"], frame["content"]["error"]


async def sse_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Status and JSON body of a refused stream request (200 and None for an opened stream)."""
    async with httpx.AsyncClient(timeout=15) as http, http.stream("GET", url, headers=headers) as response:
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/event-stream")
            return 200, None
        await response.aread()
        assert response.headers["content-type"] == "application/json"
        return response.status_code, response.json()


async def sse_until_open(sse: SSEReader) -> tuple[dict, list[dict]]:
    """The `connected` greeting and the events up to `stream-open` (which is the last of them)."""
    greeting = await sse.until("connected")
    events = []
    while True:
        event = await sse.next_event()
        events.append(event)
        if event["event"] == "stream-open":
            return greeting["data"], events


async def refused_close(url: str) -> tuple[int, str]:
    """Code and reason of a WebSocket the server accepts and closes at once (no greeting)."""
    async with websockets.connect(url, open_timeout=10) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


# ---------------------------------------------------------------------------------------------
# One server with namespaces and all three hooks


@pytest.fixture(scope="module")
def app_server(live_server_factory) -> LiveServer:
    server = live_server_factory(
        CHANNEL_NAMESPACES=json.dumps(NAMESPACES),
        REALTIME_CONNECT_HOOK=f"{HOOKS}.on_connect",
        REALTIME_SUBSCRIBE_HOOK=f"{HOOKS}.on_subscribe",
        REALTIME_PUBLISH_HOOK=f"{HOOKS}.on_publish",
        REALTIME_HOOK_TIMEOUT=str(HOOK_TIMEOUT),
    )
    manage_shell(server.database_url, MEMBERSHIP)
    return server


# -- namespaces --------------------------------------------------------------------------------


async def test_namespace_history_size_on_http_ws_and_sse(app_server):
    channel, control = unique("hist-"), unique("plain-")
    for n in range(5):
        for name in (channel, control):
            assert publish(app_server, name, {"n": n}, persist=True)["offset"] == n + 1
    async with httpx.AsyncClient() as http:
        page = (await http.get(f"{app_server.http}/api/channels/{channel}/history/")).json()
        other = (await http.get(f"{app_server.http}/api/channels/{control}/history/")).json()
    assert page["offset"] == 5
    assert [(m["offset"], m["content"]["n"]) for m in page["messages"]] == [(3, 2), (4, 3), (5, 4)]
    assert [m["content"]["n"] for m in other["messages"]] == [0, 1, 2, 3, 4]  # the global size elsewhere

    async with WSClient(ws_url(app_server)) as ws:
        reply = await ws.call("subscribe", {"channel": channel})
        assert reply["type"] == "subscribed" and reply["content"]["offset"] == 5
        assert [(await ws.recv())["content"]["n"] for _ in range(3)] == [2, 3, 4]
        marker = publish(app_server, channel, "marker")
        assert (await ws.recv())["id"] == marker["id"]  # nothing else was replayed

    async with SSEReader(sse_url(app_server, channel)) as sse:
        _, events = await sse_until_open(sse)
    assert [e["data"]["content"]["n"] for e in events[:-1]] == [2, 3, 4]
    assert [e["data"]["offset"] for e in events[:-1]] == [3, 4, 5]


async def test_namespace_without_client_publish_refuses_websocket_publishes_not_the_api(app_server):
    channel = unique("ro-")
    async with WSClient(ws_url(app_server)) as ws:
        assert (await ws.call("subscribe", {"channel": channel}))["type"] == "subscribed"
        kind, reason = error_of(await ws.call("send_to_channel", {"channel": channel, "content": "from a client"}))
        assert kind == "forbidden" and channel in reason
        # elsewhere the same client may publish
        assert (await ws.call("send_to_channel", {"channel": unique("plain-"), "content": "x"}))["type"] == "ack"
        published = publish(app_server, channel, "from the API")  # the HTTP API is trusted
        frame = await ws.recv()
        assert frame["id"] == published["id"] and frame["content"] == "from the API"


async def test_namespace_closed_to_anonymous_on_ws_sse_and_http(app_server):
    channel = unique("members-")
    publish(app_server, channel, "kept", persist=True)
    async with WSClient(ws_url(app_server)) as anonymous, WSClient(ws_url(app_server, "erin")) as erin:
        kind, reason = error_of(await anonymous.call("subscribe", {"channel": channel}))
        assert kind == "forbidden" and "authenticated" in reason
        assert error_of(await anonymous.call("history", {"channel": channel}))[0] == "forbidden"
        assert error_of(await anonymous.call("presence", {"channel": channel, "counts_only": True}))[0] == "forbidden"
        assert (await erin.call("subscribe", {"channel": channel}))["type"] == "subscribed"
        assert (await erin.recv())["content"] == "kept"

    status, body = await sse_status(sse_url(app_server, channel))
    assert status == 403 and body["type"] == "forbidden" and "authenticated" in body["error"]
    assert (await sse_status(sse_url(app_server, channel, user="erin")))[0] == 200

    history = f"{app_server.http}/api/channels/{channel}/history/"
    async with httpx.AsyncClient() as http:
        refused = await http.get(history)
        assert refused.status_code == 403 and refused.json()["type"] == "forbidden"
        assert (await http.get(f"{app_server.http}/api/channels/{channel}/")).status_code == 403
        allowed = await http.get(history, headers=bearer("erin"))
        assert allowed.status_code == 200 and [m["content"] for m in allowed.json()["messages"]] == ["kept"]


async def test_presence_off_namespace_answers_counts_only(app_server):
    quiet, plain = unique("quiet-"), unique("plain-")
    async with (
        WSClient(ws_url(app_server, "ann")) as ann,
        WSClient(ws_url(app_server, "ann")) as ann_again,
        WSClient(ws_url(app_server)) as anonymous,
    ):
        for client in (ann, ann_again, anonymous):
            for channel in (quiet, plain):
                assert (await client.call("subscribe", {"channel": channel}))["type"] == "subscribed"
        kind, reason = error_of(await anonymous.call("presence", {"channel": quiet}))
        assert kind == "forbidden" and "counts_only" in reason
        counts = await anonymous.call("presence", {"channel": quiet, "counts_only": True})
        assert counts["type"] == "presence"
        assert counts["content"] == {"channel": quiet, "connections": 3, "user_count": 1}
        full = await anonymous.call("presence", {"channel": plain})
        assert full["content"] == {"channel": plain, "connections": 3, "user_count": 1, "users": ["ann"]}
        plain_counts = await anonymous.call("presence", {"channel": plain, "counts_only": True})
        assert plain_counts["content"] == {"channel": plain, "connections": 3, "user_count": 1}

        async with httpx.AsyncClient() as http:
            detail = (await http.get(f"{app_server.http}/api/channels/{quiet}/")).json()
            assert detail["presence"] == {"channel": quiet, "connections": 3, "user_count": 1}
            assert detail["subscribers"] == 3
            detail = (await http.get(f"{app_server.http}/api/channels/{plain}/")).json()
            assert detail["presence"]["users"] == ["ann"]
            detail = (await http.get(f"{app_server.http}/api/channels/{plain}/?counts_only=true")).json()
            assert detail["presence"] == {"channel": plain, "connections": 3, "user_count": 1}


async def test_join_leave_namespace_announces_members_of_a_plain_channel(app_server):
    lobby, plain = unique("lobby-"), unique("plain-")
    async with WSClient(ws_url(app_server)) as watcher:
        watcher_id = watcher.greeting["data"]["connection_id"]
        await watcher.call("subscribe", {"channel": plain})
        await watcher.call("subscribe", {"channel": lobby})
        own = await watcher.recv()
        assert (own["type"], own["channel"]) == ("presence", lobby)
        assert own["content"] == {"event": "join", "user_id": None, "connection_id": watcher_id}
        async with WSClient(ws_url(app_server, "bob")) as bob:
            bob_id = bob.greeting["data"]["connection_id"]
            for channel in (plain, lobby):
                assert (await bob.call("subscribe", {"channel": channel}))["type"] == "subscribed"
            join = await watcher.recv()
            assert (join["type"], join["channel"]) == ("presence", lobby)
            assert join["content"] == {"event": "join", "user_id": "bob", "connection_id": bob_id}
            await bob.call("unsubscribe", {"channel": lobby})
            leave = await watcher.recv()
            assert (leave["channel"], leave["content"]) == (
                lobby,
                {"event": "leave", "user_id": "bob", "connection_id": bob_id},
            )
        # bob came and went on the plain channel too, unannounced: the next frame is this one
        marker = publish(app_server, plain, "marker")
        assert (await watcher.recv())["id"] == marker["id"]


async def test_namespace_without_recover_replays_nothing(app_server):
    channel, control = unique("norecover-"), unique("plain-")
    for n in range(3):
        publish(app_server, channel, n, persist=True)
        publish(app_server, control, n, persist=True)
    async with WSClient(ws_url(app_server)) as resumer, WSClient(ws_url(app_server)) as fresh:
        reply = await resumer.call("subscribe", {"channel": channel, "since": 1})
        assert reply["content"]["offset"] == 3 and reply["content"]["recovered"] is False
        assert (await fresh.call("subscribe", {"channel": channel}))["content"]["offset"] == 3
        marker = publish(app_server, channel, "marker")
        assert (await resumer.recv())["id"] == marker["id"]
        assert (await fresh.recv())["id"] == marker["id"]
        # the same resume on a channel that recovers replays 2 and 3
        reply = await resumer.call("subscribe", {"channel": control, "since": 1})
        assert reply["content"]["recovered"] is True
        assert [(await resumer.recv())["content"] for _ in range(2)] == [1, 2]

    async with SSEReader(sse_url(app_server, channel)) as sse:
        _, events = await sse_until_open(sse)
    assert [e["event"] for e in events] == ["stream-open"]
    assert events[-1]["data"]["offsets"] == {channel: 3}
    epoch = events[-1]["data"]["epochs"][channel]
    async with SSEReader(sse_url(app_server, channel), headers={"Last-Event-ID": f"{channel}:1-{epoch}"}) as sse:
        _, events = await sse_until_open(sse)
    assert not [e for e in events if e["event"] not in ("stream-reset", "stream-open")], events


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CHANNEL_NAMESPACES", "{chat", "expected a JSON object of channel patterns to options"),
        (
            "CHANNEL_NAMESPACES",
            '{"chat:*": {"history_size": "3"}}',
            "expected 'chat:*' history_size to be an integer from 0 to 1000000",
        ),
        (
            "CHANNEL_NAMESPACES",
            '{"chat:*": {"recovr": true}}',
            "expected 'chat:*' to use only the options history_size, history_ttl, presence, join_leave, "
            "client_publish, anonymous, recover (not 'recovr')",
        ),
    ],
)
def test_bad_namespace_setting_stops_start_up_with_one_line(tmp_path, name, value, expected):
    env = base_env(sqlite_url(str(tmp_path)), **{name: value})
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [f"configuration error: {name}={value!r}: {expected}"]
    assert result.stdout == ""


def test_bad_namespace_or_hook_stops_the_server_with_one_line(tmp_path):
    database = sqlite_url(str(tmp_path))
    for setting, value, line in [
        (
            "CHANNEL_NAMESPACES",
            '{"ro-*": {"client_publish": "no"}}',
            'configuration error: CHANNEL_NAMESPACES=\'{"ro-*": {"client_publish": "no"}}\': '
            "expected 'ro-*' client_publish to be true or false",
        ),
        (
            "REALTIME_SUBSCRIBE_HOOK",
            f"{HOOKS}.no_such_hook",
            f"configuration error: REALTIME_SUBSCRIBE_HOOK='{HOOKS}.no_such_hook': "
            f'Module "{HOOKS}" does not define a "no_such_hook" attribute/class',
        ),
    ]:
        server = LiveServer(database, **{setting: value})
        with pytest.raises(RuntimeError, match="daphne exited with 2"):
            server.start()
        assert server.log().splitlines() == [line]


# -- the subscribe hook ------------------------------------------------------------------------


async def test_subscribe_hook_reads_group_membership_through_the_orm(app_server):
    room = "room-blue"
    async with (
        WSClient(ws_url(app_server, "alice")) as alice,
        WSClient(ws_url(app_server, "bob")) as bob,
        WSClient(ws_url(app_server)) as anonymous,
    ):
        assert (await alice.call("subscribe", {"channel": room}))["type"] == "subscribed"
        assert error_of(await bob.call("subscribe", {"channel": room})) == (
            "forbidden",
            "bob is not a member of blue (asked over ws)",
        )
        assert error_of(await bob.call("history", {"channel": room})) == (
            "forbidden",
            "bob is not a member of blue (asked over ws)",
        )
        assert error_of(await anonymous.call("subscribe", {"channel": room})) == (
            "forbidden",
            "sign in to join blue (asked over ws)",
        )
        published = publish(app_server, room, "for members")
        assert (await alice.recv())["id"] == published["id"]
        assert (await bob.call("ping"))["type"] == "pong"  # refused, and still connected
        # bob joins the group: the hook reads it at the next request
        manage_shell(
            app_server.database_url,
            'from django.contrib.auth.models import Group, User\nUser.objects.get(username="bob").groups.add('
            'Group.objects.get(name="blue"))',
        )
        try:
            assert (await bob.call("subscribe", {"channel": room}))["type"] == "subscribed"
        finally:
            manage_shell(
                app_server.database_url,
                'from django.contrib.auth.models import User\nUser.objects.get(username="bob").groups.clear()',
            )
        assert error_of(await bob.call("subscribe", {"channel": "room-green"}))[1] == (
            "bob is not a member of green (asked over ws)"
        )

    assert await sse_status(sse_url(app_server, room, user="alice")) == (200, None)
    assert await sse_status(sse_url(app_server, room, user="bob")) == (
        403,
        {"type": "forbidden", "error": "bob is not a member of blue (asked over sse)"},
    )

    history = f"{app_server.http}/api/channels/{room}/history/"
    async with httpx.AsyncClient() as http:
        assert (await http.get(history, headers=bearer("alice"))).status_code == 200
        refused = await http.get(history, headers=bearer("bob"))
        assert refused.status_code == 403
        assert refused.json() == {"type": "forbidden", "error": "bob is not a member of blue (asked over http)"}
        anonymous = await http.get(history)
        assert anonymous.status_code == 403 and anonymous.json()["error"] == "sign in to join blue (asked over http)"
        detail = await http.get(f"{app_server.http}/api/channels/{room}/", headers=bearer("bob"))
        assert detail.status_code == 403 and detail.json()["error"].startswith("bob is not a member of blue")
        assert (await http.get(history, headers=ADMIN_HEADERS)).status_code == 200  # admins skip the hook


async def test_subscribe_hook_opens_a_private_channel_the_token_does_not_list(app_server):
    private = "private-room-blue"
    async with WSClient(ws_url(app_server, "alice")) as alice, WSClient(ws_url(app_server, "bob")) as bob:
        assert (await alice.call("subscribe", {"channel": private}))["type"] == "subscribed"
        assert error_of(await bob.call("subscribe", {"channel": private})) == (
            "forbidden",
            "bob is not a member of blue (asked over ws)",
        )
        # a private channel the hook has no opinion on stays closed without a grant
        kind, reason = error_of(await alice.call("subscribe", {"channel": "private-elsewhere"}))
        assert kind == "forbidden" and "'channels' claim" in reason
        published = publish(app_server, private, "secret")
        assert (await alice.recv())["id"] == published["id"]

    async with SSEReader(sse_url(app_server, private, user="alice")) as sse:
        greeting, _ = await sse_until_open(sse)
        assert private in greeting["data"]["channels"]
        published = publish(app_server, private, "secret again")
        assert (await sse.next_event())["data"]["id"] == published["id"]
    status, body = await sse_status(sse_url(app_server, private))
    assert (status, body["error"]) == (403, "sign in to join blue (asked over sse)")
    async with httpx.AsyncClient() as http:
        history = f"{app_server.http}/api/channels/{private}/history/"
        assert (await http.get(history, headers=bearer("alice"))).status_code == 200
        assert (await http.get(history, headers=bearer("bob"))).status_code == 403


async def test_subscribe_hook_answering_false_refuses(app_server):
    async with WSClient(ws_url(app_server, "alice")) as alice:
        assert error_of(await alice.call("subscribe", {"channel": unique("veto-")})) == (
            "forbidden",
            "Refused by the application.",
        )


# -- the connect hook and server-side subscriptions ----------------------------------------------


async def test_connect_hook_adds_a_server_side_channel_and_info_on_ws_and_sse(app_server):
    async with WSClient(ws_url(app_server)) as anonymous:
        assert not {"channels", "refused", "info"} & set(anonymous.greeting["data"])
    async with WSClient(ws_url(app_server, "vip-7")) as ws:
        data = ws.greeting["data"]
        assert data["user_id"] == "vip-7"
        assert data["channels"] == ["feed-vip-7"] and data["info"] == {"tier": "gold", "user": "vip-7"}
        assert "refused" not in data
        published = publish(app_server, "feed-vip-7", "just for you")
        frame = await ws.recv()
        assert (frame["id"], frame["channel"], frame["content"]) == (published["id"], "feed-vip-7", "just for you")
        presence = await ws.call("presence", {"channel": "feed-vip-7"})
        assert presence["content"]["users"] == ["vip-7"]

    async with SSEReader(sse_url(app_server, user="vip-8")) as sse:
        greeting, _ = await sse_until_open(sse)
        assert sorted(greeting["data"]["channels"]) == ["broadcast", "feed-vip-8", "user:vip-8"]
        assert greeting["data"]["info"] == {"tier": "gold", "user": "vip-8"}
        published = publish(app_server, "feed-vip-8", "streamed")
        event = await sse.next_event()
        assert (event["data"]["id"], event["data"]["content"]) == (published["id"], "streamed")


async def test_subs_claim_joins_server_side_channels_authorized_like_explicit_ones(app_server):
    claims = {"subs": ["news-dan", "room-green", "room-blue", "private-secret"]}
    async with WSClient(ws_url(app_server, "dan", **claims)) as ws:
        data = ws.greeting["data"]
        assert data["channels"] == ["news-dan", "room-green"]
        assert data["refused"]["room-blue"] == "dan is not a member of blue (asked over ws)"
        assert "'channels' claim" in data["refused"]["private-secret"]
        assert set(data["refused"]) == {"room-blue", "private-secret"}
        for channel in ("news-dan", "room-green", "room-blue"):
            publish(app_server, channel, channel)
        publish(app_server, "news-dan", "end")
        # nothing from room-blue, which was refused
        assert [(await ws.recv())["content"] for _ in range(3)] == ["news-dan", "room-green", "end"]

    async with SSEReader(sse_url(app_server, "news-extra", user="dan", **claims)) as sse:
        greeting, _ = await sse_until_open(sse)
        data = greeting["data"]
        assert sorted(data["channels"]) == ["broadcast", "news-dan", "news-extra", "room-green", "user:dan"]
        assert data["refused"]["room-blue"] == "dan is not a member of blue (asked over sse)"
        published = publish(app_server, "room-green", "green news")
        assert (await sse.next_event())["data"]["id"] == published["id"]


async def test_connect_hook_refusal_closes_4403_or_answers_403(app_server):
    assert await refused_close(ws_url(app_server, "blocked-1")) == (4403, "account suspended")
    assert await sse_status(sse_url(app_server, "news", user="blocked-1")) == (
        403,
        {"type": "forbidden", "error": "account suspended"},
    )


# -- hooks that time out or fail ---------------------------------------------------------------


async def test_slow_or_failing_subscribe_hook_refuses_that_request_only(app_server):
    async with WSClient(ws_url(app_server)) as ws:
        started = time.monotonic()
        kind, reason = error_of(await ws.call("subscribe", {"channel": unique("slow-")}, timeout=10))
        waited = time.monotonic() - started
        assert (kind, reason) == ("unavailable", "The application's subscribe hook did not answer in time.")
        assert HOOK_TIMEOUT * 0.9 <= waited < 2.5  # answered at the timeout, not when the hook ended
        assert error_of(await ws.call("subscribe", {"channel": unique("boom-")})) == (
            "unavailable",
            "The application's subscribe hook failed.",
        )
        fine = unique("plain-")
        assert (await ws.call("subscribe", {"channel": fine}))["type"] == "subscribed"
        published = publish(app_server, fine, "still here")
        assert (await ws.recv())["id"] == published["id"]

    for channel in (unique("slow-"), unique("boom-")):
        status, body = await sse_status(sse_url(app_server, channel))
        assert status == 503 and body["type"] == "unavailable", (channel, body)
    assert "subscribe hook failed" in app_server.log()


async def test_slow_or_failing_connect_hook_closes_1013_or_answers_503(app_server):
    for user, reason in [
        ("slowconn-1", "The application's connect hook did not answer in time."),
        ("crashconn-1", "The application's connect hook failed."),
    ]:
        assert await refused_close(ws_url(app_server, user)) == (1013, reason)
        assert await sse_status(sse_url(app_server, "news", user=user)) == (
            503,
            {"type": "unavailable", "error": reason},
        )
    async with WSClient(ws_url(app_server, "vip-9")) as ws:  # the server carries on
        assert ws.greeting["data"]["channels"] == ["feed-vip-9"]


# -- the publish hook ----------------------------------------------------------------------------


async def test_publish_hook_replaces_content_and_refuses(app_server):
    censored, closed = unique("censored-"), unique("closed-")
    async with WSClient(ws_url(app_server)) as sender, WSClient(ws_url(app_server)) as reader:
        for channel in (censored, closed):
            await reader.call("subscribe", {"channel": channel})
        ack = await sender.call("send_to_channel", {"channel": censored, "content": "oh darn it"})
        assert ack["type"] == "ack"
        frame = await reader.recv()
        assert frame["id"] == ack["content"]["id"]
        assert frame["content"] == {"text": "oh **** it", "censored_by": "ws"}
        assert error_of(await sender.call("send_to_channel", {"channel": closed, "content": "no"})) == (
            "forbidden",
            "publishing is closed here",
        )
        # the HTTP API is trusted: no hook, content as sent
        published = publish(app_server, closed, "from the API")
        frame = await reader.recv()  # and not the refused one before it
        assert (frame["id"], frame["content"]) == (published["id"], "from the API")
        published = publish(app_server, censored, "darn API")
        frame = await reader.recv()
        assert (frame["id"], frame["content"]) == (published["id"], "darn API")


# -- epochs and history resets -------------------------------------------------------------------


async def test_history_reset_seen_by_live_and_resuming_ws_and_sse_clients(app_server):
    channel = unique("reset:")  # a colon: SSE ids carry the channel URL-quoted
    quoted = quote(channel)
    for n in range(3):
        publish(app_server, channel, n, persist=True)
    history = f"{app_server.http}/api/channels/{channel}/history/"
    async with WSClient(ws_url(app_server)) as live_ws, SSEReader(sse_url(app_server, channel)) as live_sse:
        subscribed = await live_ws.call("subscribe", {"channel": channel})
        old = subscribed["content"]["epoch"]
        assert subscribed["content"] == {"channel": channel, "offset": 3, "epoch": old, "recovered": False}
        assert len(old) == 8
        assert [(await live_ws.recv())["offset"] for _ in range(3)] == [1, 2, 3]
        _, events = await sse_until_open(live_sse)
        assert [e["id"] for e in events] == [f"{quoted}:{n}-{old}" for n in (1, 2, 3, 3)]

        async with httpx.AsyncClient() as http:
            assert (await http.delete(history)).status_code == 403  # admins only
            assert (await http.delete(history, headers=bearer("alice"))).status_code == 403
            response = await http.delete(history, headers=ADMIN_HEADERS)
        assert response.status_code == 200
        new = response.json()["epoch"]
        assert response.json() == {"channel": channel, "offset": 0, "epoch": new}
        assert new != old and len(new) == 8

        assert await live_ws.recv() == {
            "type": "stream-reset",
            "content": {"channel": channel, "epoch": new, "offset": 0},
        }
        reset = await live_sse.next_event()
        assert (reset["event"], reset["data"], reset["id"]) == (
            "stream-reset",
            {"channels": [channel]},
            f"{quoted}:0-{new}",
        )

        acks = [publish(app_server, channel, n, persist=True) for n in range(10, 14)]
        assert [a["offset"] for a in acks] == [1, 2, 3, 4]
        frames = [await live_ws.recv() for _ in range(4)]
        assert [(f["offset"], f["content"]) for f in frames] == [(1, 10), (2, 11), (3, 12), (4, 13)]
        events = [await live_sse.next_event() for _ in range(4)]
        assert [e["id"] for e in events] == [f"{quoted}:{n}-{new}" for n in (1, 2, 3, 4)]
        assert [e["data"]["content"] for e in events] == [10, 11, 12, 13]

    # a WebSocket resuming from a position of the old epoch: nothing replayed under its old offsets
    async with WSClient(ws_url(app_server)) as resumer:
        reply = await resumer.call("subscribe", {"channel": channel, "since": 2, "epoch": old})
        assert reply["content"] == {"channel": channel, "offset": 4, "epoch": new, "recovered": False}
        marker = publish(app_server, channel, "marker")
        assert (await resumer.recv())["id"] == marker["id"]
    async with WSClient(ws_url(app_server)) as current:
        reply = await current.call("subscribe", {"channel": channel, "since": 2, "epoch": new})
        assert reply["content"] == {"channel": channel, "offset": 4, "epoch": new, "recovered": True}
        assert [(await current.recv())["content"] for _ in range(2)] == [12, 13]
        page = await current.call("history", {"channel": channel, "since": 2, "epoch": old})
        assert (page["content"]["epoch"], page["content"]["recovered"], page["content"]["messages"]) == (
            new,
            False,
            [],
        )

    # an SSE stream resuming from before the reset is told so, and gets nothing of the new epoch
    async with SSEReader(sse_url(app_server, channel), headers={"Last-Event-ID": f"{quoted}:2-{old}"}) as sse:
        _, events = await sse_until_open(sse)
    assert [e["event"] for e in events] == ["stream-reset", "stream-open"]
    assert events[0]["data"] == {"channels": [channel]}
    assert (events[1]["data"]["offsets"], events[1]["data"]["epochs"]) == ({channel: 4}, {channel: new})
    assert events[1]["id"] == f"{quoted}:4-{new}"
    # the new-style position resumes; so does an old-style one (no epoch: taken as the current one)
    for last_event_id in (f"{quoted}:2-{new}", f"{quoted}:2"):
        async with SSEReader(sse_url(app_server, channel), headers={"Last-Event-ID": last_event_id}) as sse:
            _, events = await sse_until_open(sse)
        assert [(e["event"], e["id"]) for e in events[:-1]] == [
            ("message", f"{quoted}:3-{new}"),
            ("message", f"{quoted}:4-{new}"),
        ], last_event_id

    async with httpx.AsyncClient() as http:
        stale = (await http.get(history, params={"since": 2, "epoch": old})).json()
        assert (stale["epoch"], stale["offset"], stale["recovered"], stale["messages"]) == (new, 4, False, [])
        fresh = (await http.get(history, params={"since": 2, "epoch": new})).json()
        assert [m["offset"] for m in fresh["messages"]] == [3, 4] and fresh["recovered"] is True


# ---------------------------------------------------------------------------------------------
# Signals across a two-process cluster on Redis

LIVENESS = 3  # WEBSOCKET_DISCONNECT_TIMEOUT of the clusters: a killed process is reaped after it
REDIS_DB = 11


@contextlib.contextmanager
def signal_cluster(tmp_path_factory):
    """Processes sharing one SQLite database and Redis, logging their signals to one file;
    `start()` adds one. Channel names are unique: Redis pub/sub ignores the database number."""
    redis_url = require_redis().rsplit("/", 1)[0] + f"/{REDIS_DB}"
    database = sqlite_url(str(tmp_path_factory.mktemp("cluster-db")))
    migrate(database)
    log = Path(tmp_path_factory.mktemp("signals")) / "signals.jsonl"
    log.touch()
    servers: list[LiveServer] = []

    def start() -> LiveServer:
        server = LiveServer(
            database,
            REDIS_URL=redis_url,
            WEBSOCKET_DISCONNECT_TIMEOUT=str(LIVENESS),
            REGISTRY_FLUSH_INTERVAL="0.2",
            REALTIME_CONNECT_HOOK=f"{HOOKS}.on_connect",  # imports app_hooks, whose receivers log
            APP_HOOKS_SIGNAL_LOG=str(log),
        )
        servers.append(server)
        return server.start()

    try:
        yield SimpleNamespace(start=start, log=log)
    finally:
        for server in servers:
            server.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with signal_cluster(tmp_path_factory) as processes:
        processes.a, processes.b = processes.start(), processes.start()
        yield processes


def signals_of(log: Path, *connection_ids: str) -> list[dict]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["connection_id"] in connection_ids]


def disconnections(log: Path, *connection_ids: str) -> int:
    return sum(line["signal"] == "disconnected" for line in signals_of(log, *connection_ids))


def tally(lines: list[dict]) -> Counter:
    return Counter((line["signal"], line["connection_id"], line.get("channel")) for line in lines)


def registered(server: LiveServer, expected: dict[str, list[str]]) -> bool:
    """Whether the registry (the shared database, read through `server`) holds these connections
    with these channels."""
    listed = httpx.get(server.http + "/ws/connections", headers=ADMIN_HEADERS).json()["results"]
    channels = {c["id"]: c["channels"] for c in listed}
    return all(channels.get(cid) == sorted(names) for cid, names in expected.items())


@pytest.mark.redis
async def test_signals_fire_once_per_connection_on_a_normal_close(cluster):
    channel = unique("sig-")
    async with (
        WSClient(ws_url(cluster.a, "vip-sig")) as on_a,
        SSEReader(sse_url(cluster.b, channel, user="sam")) as on_b,
    ):
        a_id = on_a.greeting["data"]["connection_id"]
        b_id = (await on_b.until("connected"))["data"]["data"]["connection_id"]
        await on_b.until("stream-open")
        assert (await on_a.call("subscribe", {"channel": channel}))["type"] == "subscribed"
        await on_a.call("unsubscribe", {"channel": channel})
        await on_a.call("subscribe", {"channel": channel})
    await eventually(lambda: disconnections(cluster.log, a_id, b_id) == 2, timeout=10, what="both disconnected")
    await asyncio.sleep(LIVENESS / 2)  # several reaper rounds of both processes: nothing more comes
    lines = signals_of(cluster.log, a_id, b_id)
    assert tally(lines) == Counter(
        {
            ("connected", a_id, None): 1,
            ("subscribed", a_id, "feed-vip-sig"): 1,  # the connect hook's server-side channel
            ("subscribed", a_id, channel): 2,  # subscribed, left, subscribed again
            ("unsubscribed", a_id, channel): 2,
            ("unsubscribed", a_id, "feed-vip-sig"): 1,
            ("disconnected", a_id, None): 1,
            ("connected", b_id, None): 1,
            ("subscribed", b_id, channel): 1,
            ("unsubscribed", b_id, channel): 1,
            ("disconnected", b_id, None): 1,
        }
    )
    pids = {cluster.a.process_pid: a_id, cluster.b.process_pid: b_id}
    assert all(pids[line["pid"]] == line["connection_id"] for line in lines)  # each by the process holding it
    assert all(line["transport"] == ("ws" if line["connection_id"] == a_id else "sse") for line in lines)
    assert all(line["sender"] == line["transport"] for line in lines)
    assert all(line.get("reaped") is False for line in lines if line["signal"] in ("disconnected", "unsubscribed"))
    connected = {line["connection_id"]: line for line in lines if line["signal"] == "connected"}
    assert connected[a_id]["info"] == {"tier": "gold", "user": "vip-sig"}
    assert connected[a_id]["channels"] == ["feed-vip-sig"] and connected[a_id]["user_id"] == "vip-sig"
    assert connected[b_id]["channels"] == [channel] and connected[b_id]["user_id"] == "sam"
    disconnected = {line["connection_id"]: line for line in lines if line["signal"] == "disconnected"}
    assert disconnected[a_id]["code"] == 1000


@pytest.mark.redis
async def test_a_killed_process_is_reaped_once_with_signals_from_a_survivor(cluster):
    # Both survivors serve clients of their own meanwhile (streams: no idle timeout) and race to reap.
    async with (
        SSEReader(sse_url(cluster.a, unique("keep-"))) as keep_a,
        SSEReader(sse_url(cluster.b, unique("keep-"))) as keep_b,
    ):
        await keep_a.until("stream-open")
        await keep_b.until("stream-open")
        victim = cluster.start()
        first, second, streamed = unique("kill-"), unique("kill-"), unique("kill-")
        ws = await WSClient(ws_url(victim, "gina")).__aenter__()
        sse = await SSEReader(sse_url(victim, streamed)).__aenter__()
        try:
            ws_id = ws.greeting["data"]["connection_id"]
            sse_id = (await sse.until("connected"))["data"]["data"]["connection_id"]
            for channel in (first, second):
                assert (await ws.call("subscribe", {"channel": channel}))["type"] == "subscribed"
            expected = {ws_id: [first, second], sse_id: [streamed]}
            await eventually(lambda: registered(cluster.a, expected), timeout=10, what="the victim's rows")
            await eventually(lambda: len(signals_of(cluster.log, ws_id, sse_id)) == 5, what="the victim's signals")
            victim.kill()  # SIGKILL: nothing of the victim runs again
            killed_at = time.monotonic()
            await eventually(
                lambda: disconnections(cluster.log, ws_id, sse_id) == 2,
                timeout=LIVENESS + 10,
                what="the reaped connections' disconnected signals",
            )
            assert time.monotonic() - killed_at >= LIVENESS - 1  # not before the liveness window
            await asyncio.sleep(LIVENESS / 2)  # both survivors reap on: nothing is told twice
        finally:
            with contextlib.suppress(Exception):
                await sse.__aexit__(None, None, None)
            with contextlib.suppress(Exception):
                await ws.socket.close()

    lines = signals_of(cluster.log, ws_id, sse_id)
    assert tally(lines) == Counter(
        {
            ("connected", ws_id, None): 1,
            ("subscribed", ws_id, first): 1,
            ("subscribed", ws_id, second): 1,
            ("unsubscribed", ws_id, first): 1,
            ("unsubscribed", ws_id, second): 1,
            ("disconnected", ws_id, None): 1,
            ("connected", sse_id, None): 1,
            ("subscribed", sse_id, streamed): 1,
            ("unsubscribed", sse_id, streamed): 1,
            ("disconnected", sse_id, None): 1,
        }
    )
    survivors = {cluster.a.process_pid, cluster.b.process_pid}
    for line in lines:
        if line["signal"] in ("connected", "subscribed"):
            assert line["pid"] == victim.last_pid, line
        else:  # told by a survivor, as reaped
            assert line["pid"] in survivors and line["reaped"] is True, line
            assert line["transport"] == ("ws" if line["connection_id"] == ws_id else "sse")
    assert len({line["pid"] for line in lines if line["signal"] == "disconnected"}) == 1
    assert {line["code"] for line in lines if line["signal"] == "disconnected"} == {1006}
    assert {line["user_id"] for line in lines if line["signal"] == "disconnected"} == {"gina", None}
    listed = httpx.get(cluster.b.http + "/ws/connections", headers=ADMIN_HEADERS).json()["results"]
    assert not {ws_id, sse_id} & {c["id"] for c in listed}  # the registry agrees: they are gone


@pytest.mark.redis
async def test_a_survivor_that_never_held_a_connection_reaps_a_killed_peer(tmp_path_factory):
    """The liveness promise does not depend on the survivor having served clients itself (a process
    just started, or one the load balancer has not sent anyone to yet)."""
    with signal_cluster(tmp_path_factory) as pair:
        survivor, victim = pair.start(), pair.start()
        channel = unique("kill-")
        ws = await WSClient(ws_url(victim, "hal")).__aenter__()
        try:
            ws_id = ws.greeting["data"]["connection_id"]
            assert (await ws.call("subscribe", {"channel": channel}))["type"] == "subscribed"
            # read through the victim: the survivor is asked nothing until the end
            await eventually(lambda: registered(victim, {ws_id: [channel]}), timeout=10, what="the victim's rows")
            victim.kill()
            await eventually(
                lambda: disconnections(pair.log, ws_id) == 1,
                timeout=LIVENESS + 10,
                what="the survivor to reap the killed process's connection",
            )
        finally:
            with contextlib.suppress(Exception):
                await ws.socket.close()
        lines = signals_of(pair.log, ws_id)
        reaped = [line for line in lines if line["signal"] in ("unsubscribed", "disconnected")]
        assert [(line["signal"], line["pid"], line["reaped"]) for line in reaped] == [
            ("unsubscribed", survivor.process_pid, True),
            ("disconnected", survivor.process_pid, True),
        ]
