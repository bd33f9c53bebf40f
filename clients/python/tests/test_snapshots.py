"""Snapshots then a subscription from their position, against scripted servers in this process: a
`websockets` server for the WebSocket client, httpx mock transports for the SSE client (its stream
and the snapshot API)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import scripted
from realtime_client import HTTPPublisher, ReplyError, SSEClient, WebSocketClient
from realtime_client.positions import parse_event_id, with_positions
from scripted import FAST, eventually


def envelope(channel: str, offset: int, type: str = "updated") -> dict[str, Any]:
    return {
        "id": f"{channel}-{offset}",
        "type": type,
        "channel": channel,
        "content": {"pk": 5, "data": {"title": f"t{offset}"}},
        "sender": None,
        "timestamp": "2026-12-03T10:00:00.000000Z",
        "offset": offset,
    }


def snapshot_of(channel: str, offset: int, epoch: str = "ep1") -> dict[str, Any]:
    return {"channel": channel, "offset": offset, "epoch": epoch, "data": {"title": "as of it"}, "has_more": False}


def test_a_position_is_put_in_place_of_a_channels_own_or_added_to_an_event_id():
    assert with_positions("news:7-e1,doc%3A5:2-e1", {"doc:5": (9, "e2")}) == "news:7-e1,doc%3A5:9-e2"
    assert with_positions(None, {"doc:5": (0, "")}) == "doc%3A5:0"
    assert with_positions("error,news:7", {"user@x": (3, "a1")}) == "news:7,user%40x:3-a1"
    assert parse_event_id(with_positions("news:7-e1", {"doc:5": (3, "e1")})) == {"news": (7, "e1"), "doc:5": (3, "e1")}


# -- WebSocket -----------------------------------------------------------------------------------


class ScriptedServer(scripted.ScriptedServer):
    """Answers `snapshot` with `snapshots[channel]` (an error reply for a string) and `subscribe`
    with `subscribed` at the channel's head; `push` sends frames on the last connection."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: dict[str, dict[str, Any] | str] = {}
        self.heads: dict[str, tuple[int, str]] = {}

    def actions(self, connection: int = 1) -> list[tuple[str, dict[str, Any]]]:
        return [(frame["action"], frame.get("data", {})) for frame in self.frames[connection - 1]]

    def greeting(self, number: int) -> dict[str, Any]:
        return {**super().greeting(number), "user_id": "7"}

    async def answer(self, socket: Any, number: int, frame: dict[str, Any]) -> None:
        channel, request_id = frame.get("data", {}).get("channel"), frame.get("request_id")
        if frame["action"] == "snapshot":
            answer = self.snapshots[channel]
            if isinstance(answer, str):
                await self.reply(socket, "error", {"type": answer, "error": "refused"}, request_id)
            else:
                await self.reply(socket, "snapshot", answer, request_id)
        elif frame["action"] == "subscribe":
            offset, epoch = self.heads.get(channel, (0, ""))
            content = {"channel": channel, "offset": offset, "epoch": epoch, "recovered": True}
            await self.reply(socket, "subscribed", content, request_id)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer() as scripted:
        yield scripted


@pytest.fixture
async def ws_client(server: ScriptedServer) -> AsyncIterator[WebSocketClient]:
    client = WebSocketClient("127.0.0.1", server.port, **FAST)
    yield client
    await client.disconnect()


async def test_ws_subscribes_since_the_snapshot_and_resumes_from_there(server, ws_client):
    server.snapshots["doc:5"] = snapshot_of("doc:5", 3)
    server.heads["doc:5"] = (3, "ep1")
    replies: list[Any] = []
    ws_client.on_message("snapshot")(replies.append)
    await ws_client.connect()

    snapshot = await ws_client.subscribe_with_snapshot("doc:5")

    assert snapshot == snapshot_of("doc:5", 3)
    assert server.actions() == [("snapshot", {"channel": "doc:5"}), ("subscribe", {"channel": "doc:5", "since": 3, "epoch": "ep1"})]  # fmt: skip
    assert (ws_client.offsets, ws_client.epochs) == ({"doc:5": 3}, {"doc:5": "ep1"})
    await eventually(lambda: replies)
    assert replies[0]["content"] == snapshot
    await server.push(envelope("doc:5", 4))
    await eventually(lambda: ws_client.offsets["doc:5"] == 4)

    await server.sockets[-1].close(1011, "")  # a reconnection resumes from what followed the snapshot
    await eventually(lambda: len(server.frames) == 2 and server.actions(2))
    assert server.actions(2) == [("subscribe", {"channel": "doc:5", "since": 4, "epoch": "ep1"})]


async def test_ws_a_refused_snapshot_raises_and_subscribes_to_nothing(server, ws_client):
    server.snapshots["doc:7"] = "forbidden"
    await ws_client.connect()
    with pytest.raises(ReplyError) as refused:
        await ws_client.subscribe_with_snapshot("doc:7")
    assert refused.value.code == "forbidden"
    assert server.actions() == [("snapshot", {"channel": "doc:7"})]
    assert ws_client.channels == []


async def test_ws_on_a_channel_followed_already_envelopes_up_to_the_snapshot_are_dropped(server, ws_client):
    server.heads["doc:5"] = (2, "ep1")
    server.snapshots["doc:5"] = snapshot_of("doc:5", 4)
    await ws_client.connect()
    await ws_client.subscribe_to_channel("doc:5")
    stream = ws_client.messages()

    await ws_client.subscribe_with_snapshot("doc:5")
    # 3 and 4 were on their way when the snapshot was read: it shows them already.
    await server.push(*(envelope("doc:5", offset) for offset in (3, 4, 5, 6)))
    received = [(await anext(stream))["offset"] for _ in range(2)]

    assert received == [5, 6]
    assert [action for action, _ in server.actions()] == ["subscribe", "snapshot"], "not subscribed again"
    assert ws_client.offsets == {"doc:5": 6}
    await server.push({"type": "stream-reset", "content": {"channel": "doc:5", "epoch": "ep2", "offset": 0}})
    await server.push(envelope("doc:5", 1) | {"id": "doc:5-ep2-1"})  # a new history's offsets pass
    assert (await anext(stream))["offset"] == 1


# -- SSE -------------------------------------------------------------------------------------------


class ScriptedStreams:
    """Each stream request gets a queue of SSE text the test feeds; the snapshot API answers from
    `snapshots` (a status and a body)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.queues: list[asyncio.Queue[str | None]] = []
        self.api: list[httpx.Request] = []
        self.snapshots: dict[str, tuple[int, dict[str, Any]]] = {}

    async def stream(self, request: httpx.Request) -> httpx.Response:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.requests.append(request)
        self.queues.append(queue)

        async def body() -> AsyncIterator[bytes]:
            while (text := await queue.get()) is not None:
                yield text.encode()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    async def snapshot(self, request: httpx.Request) -> httpx.Response:
        self.api.append(request)
        channel = request.url.path.split("/")[3]
        status, body = self.snapshots[channel]
        return httpx.Response(status, json=body)

    def send(self, event: str, data: Any, id: str | None = None) -> None:
        self.queues[-1].put_nowait(f"{f'id: {id}' + chr(10) if id else ''}event: {event}\ndata: {json.dumps(data)}\n\n")

    def greet(self) -> None:
        greeting = {"connection_id": f"s{len(self.queues)}", "user_id": "7", "heartbeat_interval": 30}
        self.send("connected", {"type": "connected", "data": greeting})


@pytest.fixture
async def streams() -> AsyncIterator[tuple[ScriptedStreams, SSEClient]]:
    scripted = ScriptedStreams()
    # A slow backoff: reopening for a new channel must not wait for it.
    client = SSEClient("127.0.0.1", 8000, token="jwt-1", channels=["news"], reconnect_interval=5, request_timeout=2)
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(scripted.stream))
    client.publisher = HTTPPublisher(client.endpoint, transport=httpx.MockTransport(scripted.snapshot))
    yield scripted, client
    for queue in scripted.queues:
        queue.put_nowait(None)
    await client.disconnect()


async def test_sse_takes_the_snapshot_over_http_and_reopens_the_stream_at_once_from_its_position(streams):
    scripted, client = streams
    scripted.snapshots["doc:5"] = (200, snapshot_of("doc:5", 3))
    seen: list[Any] = []
    client.on_event("*")(lambda event: seen.append((event["event"], (event["data"] or {}).get("offset"))))
    connecting = asyncio.create_task(client.connect())
    await eventually(lambda: scripted.queues)
    scripted.greet()
    await connecting
    scripted.send("stream-open", {"channels": ["news"]}, "news:7-e0")
    await eventually(lambda: client.last_event_id == "news:7-e0")

    taking = asyncio.create_task(client.subscribe_with_snapshot("doc:5"))
    await eventually(lambda: len(scripted.requests) == 2)
    reopened = scripted.requests[1]
    assert scripted.api[0].url.raw_path == b"/api/channels/doc%3A5/snapshot/"
    assert scripted.api[0].headers["authorization"] == "Bearer jwt-1"
    assert reopened.url.params["channels"] == "news,doc:5"
    assert reopened.headers["last-event-id"] == "news:7-e0,doc%3A5:3-ep1"
    assert not taking.done(), "returns once the stream with the channel is open"
    scripted.greet()
    scripted.send("updated", envelope("doc:5", 4), "news:7-e0,doc%3A5:4-ep1")
    scripted.send("stream-open", {"channels": ["news", "doc:5"]}, "news:7-e0,doc%3A5:4-ep1")
    assert (await asyncio.wait_for(taking, 2)) == snapshot_of("doc:5", 3)

    await eventually(lambda: ("updated", 4) in seen)
    assert seen.index(("snapshot", 3)) < seen.index(("updated", 4)), "handlers get the snapshot first"
    assert client.channels == ["news", "doc:5"]
    assert client.positions["doc:5"] == (4, "ep1")
    assert client.recovery == {"news": True, "doc:5": True}


async def test_sse_a_disconnected_client_opens_with_the_channel_at_the_snapshot(streams):
    scripted, client = streams
    scripted.snapshots["docs:general"] = (200, snapshot_of("docs:general", 12, "ep3"))
    assert (await client.subscribe_with_snapshot("docs:general"))["offset"] == 12
    assert scripted.requests == []
    connecting = asyncio.create_task(client.connect())
    await eventually(lambda: scripted.queues)
    assert scripted.requests[0].url.params["channels"] == "news,docs:general"
    assert scripted.requests[0].headers["last-event-id"] == "docs%3Ageneral:12-ep3"
    scripted.greet()
    await connecting


async def test_sse_a_refused_snapshot_raises_with_its_status_and_adds_nothing(streams):
    scripted, client = streams
    scripted.snapshots["doc:7"] = (403, {"type": "forbidden", "error": "Not allowed to follow this document."})
    with pytest.raises(ReplyError) as refused:
        await client.subscribe_with_snapshot("doc:7")
    assert (refused.value.code, refused.value.status) == ("forbidden", 403)
    assert client.channels == ["news"]
