"""The SSE endpoint against a real daphne process, read with an independent parser (httpx-sse)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.clients import SSEReader, WSClient, without_epochs
from tests.support.server import ADMIN_HEADERS

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def sse_server(live_server_factory):
    return live_server_factory(SSE_HEARTBEAT_INTERVAL="1", SSE_RETRY_TIMEOUT="1500", SSE_MAX_CONNECTIONS="6")


async def publish(server, path: str, body: dict) -> dict:
    async with httpx.AsyncClient() as http:
        response = await http.post(server.http + path, json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def test_stream_headers_retry_and_greeting(sse_server):
    async with SSEReader(sse_server.http + "/sse/connect?channels=news") as stream:
        headers = stream.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in headers["cache-control"]
        assert headers["x-accel-buffering"] == "no"
        greeting = await stream.next_event()
        assert greeting["event"] == "connected"
        assert greeting["retry"] == 1500
        data = greeting["data"]["data"]
        assert set(data) == {"connection_id", "user_id", "heartbeat_interval", "channels"}
        assert data["channels"] == ["news", "broadcast"]
        opened = await stream.next_event()
        assert opened["event"] == "stream-open"


async def test_two_channels_receive_from_both_http_apis_and_a_websocket_client(sse_server):
    url = sse_server.http + "/sse/connect?channels=news&channel=alerts"
    async with SSEReader(url) as stream:
        opened = await stream.until("stream-open")
        assert without_epochs(opened["id"]) == "news:0,alerts:0"
        first = await publish(
            sse_server,
            "/sse/send-to-channel",
            {"channel": "news", "event": "news_update", "data": {"title": "Новая статья"}},
        )
        second = await publish(sse_server, "/ws/send-to-channel", {"channel": "alerts", "message": {"content": "fire"}})
        async with WSClient(sse_server.ws + "/ws/connect") as ws:
            ack = await ws.call("send_to_channel", {"channel": "news", "content": "from ws"})
        events = [await stream.next_event() for _ in range(3)]
    assert [e["event"] for e in events] == ["news_update", "message", "text"]
    assert events[0]["data"]["id"] == first["id"] and events[0]["data"]["content"] == {"title": "Новая статья"}
    assert events[1]["data"]["id"] == second["id"] and events[1]["data"]["channel"] == "alerts"
    assert events[2]["data"]["id"] == ack["content"]["id"]
    assert events[2]["data"]["sender"]["connection_id"] == ws.greeting["data"]["connection_id"]
    # not persisted: no `id:` field, so the stream's position (EventSource's lastEventId) is unchanged
    assert all(e["id"] == "news:0,alerts:0" for e in events)


async def test_broadcast_notification_and_personal_delivery(sse_server):
    from streaming.auth import authenticator

    token = authenticator.create_access_token({"sub": "sse-user"})
    async with (
        SSEReader(f"{sse_server.http}/sse/connect?token={token}") as mine,
        SSEReader(sse_server.http + "/sse/connect") as anonymous,
    ):
        greeting = await mine.next_event()
        assert greeting["data"]["data"]["user_id"] == "sse-user"
        assert "user:sse-user" in greeting["data"]["data"]["channels"]
        await mine.until("stream-open")
        await anonymous.until("stream-open")
        await publish(sse_server, "/ws/send-to-user", {"user_id": "sse-user", "message": {"content": "just you"}})
        await publish(
            sse_server,
            "/sse/notification",
            {"title": "Важное уведомление", "content": "Текст уведомления", "type": "warning"},
        )
        personal = await mine.next_event()
        assert personal["event"] == "message" and personal["data"]["content"] == "just you"
        notification = await mine.next_event()
        assert notification["event"] == "notification"
        assert notification["data"]["content"]["type"] == "warning"
        assert notification["data"]["content"]["title"] == "Важное уведомление"
        assert (await anonymous.next_event())["event"] == "notification"  # not the personal one


async def test_heartbeat_every_interval(sse_server):
    async with SSEReader(sse_server.http + "/sse/connect") as stream:
        await stream.until("stream-open")
        started = time.monotonic()
        first = await stream.until("heartbeat", timeout=3)
        second = await stream.until("heartbeat", timeout=3)
        assert first["data"]["type"] == "heartbeat"
        assert 0.5 < time.monotonic() - started < 3
        assert first["data"]["timestamp"] < second["data"]["timestamp"]


async def test_refusals_are_http_errors_before_any_stream(sse_server):
    async with httpx.AsyncClient() as http:
        bad = await http.get(sse_server.http + "/sse/connect?channels=bad%20channel")
        assert bad.status_code == 400 and bad.json()["type"] == "invalid_channel"
        forbidden = await http.get(sse_server.http + "/sse/connect?channels=private-room")
        assert forbidden.status_code == 403 and forbidden.json()["type"] == "forbidden"
        someone_else = await http.get(sse_server.http + "/sse/connect?channels=user:alice")
        assert someone_else.status_code == 403
        garbage = await http.get(sse_server.http + "/sse/connect?token=not-a-jwt")
        assert garbage.status_code == 401 and garbage.json()["type"] == "unauthenticated"
        assert garbage.headers["www-authenticate"].startswith("Bearer")
        bad_position = await http.get(
            sse_server.http + "/sse/connect?channels=news", headers={"Last-Event-ID": "news:x"}
        )
        assert bad_position.status_code == 400
        post = await http.post(sse_server.http + "/sse/connect")
        assert post.status_code == 400
        for query in ("channel=" + "a" * 100 + "%0A", "channel=news%0A", "channels=news%0A,b"):
            newline = await http.get(sse_server.http + "/sse/connect?" + query)
            assert newline.status_code == 400 and newline.json()["type"] == "invalid_channel", query


async def test_max_connections_gives_503_with_retry_after(sse_server):
    streams = [SSEReader(sse_server.http + "/sse/connect") for _ in range(6)]
    for stream in streams:
        await stream.__aenter__()
    try:
        async with httpx.AsyncClient() as http:
            full = await http.get(sse_server.http + "/sse/connect")
        assert full.status_code == 503
        assert full.headers["retry-after"] == "1"
        assert full.json()["type"] == "unavailable"
    finally:
        for stream in streams:
            await stream.__aexit__(None, None, None)


async def test_resume_with_last_event_id_header_and_query(sse_server):
    url = sse_server.http + "/sse/connect?channels=resume-a,resume-b"
    async with SSEReader(url) as stream:
        await stream.until("stream-open")
        await publish(
            sse_server, "/ws/send-to-channel", {"channel": "resume-a", "message": {"content": 1}, "persist": True}
        )
        seen = await stream.next_event()
        position = seen["id"]
        assert without_epochs(position) == "resume-a:1,resume-b:0"
    missed = [
        await publish(
            sse_server, "/ws/send-to-channel", {"channel": channel, "message": {"content": n}, "persist": True}
        )
        for n, channel in enumerate(["resume-a", "resume-b", "resume-a"], start=2)
    ]
    for headers, query in (({"Last-Event-ID": position}, ""), ({}, f"&lastEventId={position}")):
        async with SSEReader(url + query, headers=headers) as stream:
            await stream.until("connected")
            replayed = [await stream.next_event() for _ in range(3)]
            opened = await stream.next_event()
        assert [e["data"]["id"] for e in sorted(replayed, key=lambda e: e["data"]["timestamp"])] == [
            m["id"] for m in missed
        ]
        assert without_epochs(replayed[-1]["id"]) in ("resume-a:3,resume-b:1", "resume-a:2,resume-b:1")
        assert opened["event"] == "stream-open" and without_epochs(opened["id"]) == "resume-a:3,resume-b:1"


async def test_new_subscriber_gets_retained_history_first(sse_server):
    for n in range(3):
        await publish(
            sse_server, "/ws/send-to-channel", {"channel": "retained", "message": {"content": n}, "persist": True}
        )
    async with SSEReader(sse_server.http + "/sse/connect?channels=retained") as stream:
        await stream.until("connected")
        history = [await stream.next_event() for _ in range(3)]
    assert [e["data"]["content"] for e in history] == [0, 1, 2]
    assert [without_epochs(e["id"]) for e in history] == ["retained:1", "retained:2", "retained:3"]


async def test_position_too_old_gets_stream_reset(live_server_factory):
    server = live_server_factory(CHANNEL_HISTORY_SIZE="2")
    for n in range(5):
        await publish(server, "/ws/send-to-channel", {"channel": "short", "message": {"content": n}, "persist": True})
    async with SSEReader(server.http + "/sse/connect?channels=short", headers={"Last-Event-ID": "short:1"}) as stream:
        await stream.until("connected")
        reset = await stream.next_event()
    assert reset["event"] == "stream-reset"
    assert reset["data"] == {"channels": ["short"]}
    assert without_epochs(reset["id"]) == "short:5"


async def test_stream_visible_in_registry_and_closed_by_delete(sse_server):
    async with SSEReader(sse_server.http + "/sse/connect?channels=watched") as stream:
        connection_id = (await stream.next_event())["data"]["data"]["connection_id"]
        async with httpx.AsyncClient() as http:
            listed = (
                await http.get(sse_server.http + "/ws/connections?transport=sse&channel=watched", headers=ADMIN_HEADERS)
            ).json()
            assert [c["id"] for c in listed["results"]] == [connection_id]
            stats = (await http.get(sse_server.http + "/ws/stats")).json()
            assert stats["sse"]["total"] >= 1
            assert (
                await http.delete(f"{sse_server.http}/ws/connections/{connection_id}", headers=ADMIN_HEADERS)
            ).status_code == 204
        error = await stream.until("stream-error")
        assert error["data"]["condition"] == "closed"
        await asyncio.wait_for(stream.ended.wait(), 3)
    async with httpx.AsyncClient() as http:
        await asyncio.sleep(0.3)
        listed = (
            await http.get(sse_server.http + "/ws/connections?transport=sse&channel=watched", headers=ADMIN_HEADERS)
        ).json()
    assert listed["count"] == 0


async def test_django_eventstream_send_event_reaches_sse_and_ws(live_server_factory, tmp_path):
    server = live_server_factory()
    async with (
        SSEReader(server.http + "/sse/connect?channels=legacy") as stream,
        WSClient(server.ws + "/ws/connect") as ws,
    ):
        await stream.until("stream-open")
        await ws.call("subscribe", {"channel": "legacy"})
        import subprocess
        import sys

        from tests.support.server import ROOT, base_env

        code = "import django; django.setup(); from django_eventstream import send_event; send_event('legacy', 'news_update', {'n': 1})"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base_env(server.database_url), check=True)
        # another process stored it; with the in-memory bus it is recovered from history, not live:
        await asyncio.sleep(0.2)
    async with SSEReader(server.http + "/sse/connect?channels=legacy") as stream:
        await stream.until("connected")
        event = await stream.next_event()
    assert (
        event["event"] == "news_update"
        and event["data"]["content"] == {"n": 1}
        and without_epochs(event["id"]) == "legacy:1"
    )


async def test_sse_disabled_unmounts_the_endpoint(live_server_factory):
    server = live_server_factory(SSE_ENABLED="false")
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http + "/sse/connect")).status_code == 404


async def test_head_answers_the_stream_headers_without_a_stream(sse_server):
    async with httpx.AsyncClient() as http:
        head = await http.head(sse_server.http + "/sse/connect?channels=news", timeout=3)
        assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
        assert head.content == b""
        refused = await http.head(sse_server.http + "/sse/connect?channels=private-x", timeout=3)
        assert refused.status_code == 403
        stats = (await http.get(sse_server.http + "/ws/stats")).json()
        assert stats["sse"]["total"] == 0


async def test_streams_per_address_are_limited_with_429(live_server_factory):
    server = live_server_factory(MAX_CONNECTIONS_PER_IP="1")
    async with SSEReader(server.http + "/sse/connect?channels=a") as first:
        await first.until("stream-open")
        async with httpx.AsyncClient() as http:
            refused = await http.get(server.http + "/sse/connect?channels=a")
        assert refused.status_code == 429 and refused.json()["type"] == "rate_limited"
        assert "too many connections from this address" in refused.json()["error"].lower()
        assert int(refused.headers["retry-after"]) >= 1


async def test_a_stream_that_stops_reading_is_ended_and_its_socket_dropped(live_server_factory):
    """The outbox fills, the stream is closed as a slow consumer; its `stream-error` cannot get
    through a socket that takes nothing, so after SLOW_CONSUMER_TIMEOUT the socket is dropped."""
    import socket

    server = live_server_factory(WEBSOCKET_MESSAGE_QUEUE_SIZE="5", SLOW_CONSUMER_TIMEOUT="1")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(b"GET /sse/connect?channels=flood HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert stalled.recv(64).startswith(b"HTTP/1.1 200")  # then it reads no more
    body = {"channel": "flood", "message": {"content": "x" * 60_000}}
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(200):
            assert (await http.post(server.http + "/ws/send-to-channel", json=body)).status_code == 202
            stats = (await http.get(server.http + "/ws/stats")).json()
            if stats["sse"]["total"] == 0:
                break
        assert stats["sse"]["total"] == 0, "the stalled stream still holds its slot"
    stalled.settimeout(5)
    ended = False
    try:
        while stalled.recv(1 << 20):  # read what was sent before the drop; then the end
            pass
        ended = True
    except OSError:
        ended = True  # reset: dropped
    stalled.close()
    assert ended
    assert "slow consumer" in server.log()


async def test_sse_streams_join_and_leave_presence_channels_like_websockets(sse_server):
    from streaming.auth import authenticator

    token = authenticator.create_access_token({"sub": "watcher", "channels": ["presence-*"]})
    reader_token = authenticator.create_access_token({"sub": "reader", "channels": ["presence-*"]})
    async with WSClient(sse_server.ws + f"/ws/connect?token={token}") as watcher:
        await watcher.call("subscribe", {"channel": "presence-room"})
        assert (await watcher.recv())["content"]["user_id"] == "watcher"  # its own join comes first
        async with SSEReader(sse_server.http + f"/sse/connect?channels=presence-room&token={reader_token}") as sse:
            await sse.until("stream-open")
            joined = await watcher.recv()
            assert joined["type"] == "presence" and joined["content"]["event"] == "join"
            assert joined["content"]["user_id"] == "reader"
        left = await watcher.recv()
        assert left["content"] == {**joined["content"], "event": "leave"}
