"""Stream epochs, history resets and server-side channels, against scripted servers in this process:
a `websockets` server for the WebSocket client, an httpx mock transport for the SSE client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import scripted
from realtime_client import ResetContext, SSEClient, WebSocketClient, parse_event_id
from realtime_client.positions import was_reset
from scripted import FAST, eventually


def envelope(channel: str, content: Any, offset: int | None, id: str | None = None) -> dict[str, Any]:
    return {
        "id": id or f"{channel}-{offset}-{content}",
        "type": "text",
        "channel": channel,
        "content": content,
        "sender": None,
        "timestamp": "2026-12-03T10:00:00.000000Z",
        "offset": offset,
    }


# -- positions ------------------------------------------------------------------------------------


def test_an_sse_id_is_read_as_offset_and_epoch_per_channel():
    positions = parse_event_id("news:7-k3v9q2zd,user%3Aalice:3,garbage,:4,odd:e3-17,alerts:0-A1")
    assert positions == {"news": (7, "k3v9q2zd"), "user:alice": (3, ""), "alerts": (0, "A1")}
    assert parse_event_id(None) == parse_event_id("") == {}


def test_a_resumption_is_a_reset_when_the_epoch_changed_or_the_head_is_behind():
    assert was_reset(5, "old", 2, "new", recovered=False)
    assert was_reset(5, "old", 9, "new", recovered=False)  # the new history grew past 5
    assert was_reset(5, None, 2, "new", recovered=False)  # no epoch known: the head says it
    assert not was_reset(5, "same", 9, "same", recovered=False)  # history trimmed: a gap
    assert not was_reset(5, "old", 2, "new", recovered=True)
    assert not was_reset(None, "old", 0, "new", recovered=False)  # not a resumption


# -- a scripted WebSocket server ---------------------------------------------------------------------


class ScriptedServer(scripted.ScriptedServer):
    """Greets each connection with `greetings[n]` (the last one repeated) and answers each
    `subscribe` with `subscribed[channel]` (a list consumed in order), then its history."""

    def __init__(self) -> None:
        super().__init__()
        self.greetings: list[dict[str, Any]] = [{}]
        self.subscribed: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}

    def subscribes(self, connection: int) -> list[dict[str, Any]]:
        frames = self.frames[connection - 1] if len(self.frames) >= connection else []
        return [frame["data"] for frame in frames if frame["action"] == "subscribe"]

    async def drop(self) -> None:
        await self.sockets[-1].close(1011, "")

    def greeting(self, number: int) -> dict[str, Any]:
        return {**super().greeting(number), **self.greetings[min(number, len(self.greetings) - 1)]}

    async def answer(self, socket: Any, number: int, frame: dict[str, Any]) -> None:
        action, request_id, request = frame["action"], frame.get("request_id"), frame.get("data", {})
        if action == "subscribe":
            script = self.subscribed.get(request["channel"]) or [({"offset": 0, "epoch": ""}, [])]
            reply, history = script.pop(0) if len(script) > 1 else script[0]
            await self.reply(
                socket, "subscribed", {"channel": request["channel"], "recovered": False, **reply}, request_id
            )
            for item in history:
                await socket.send(json.dumps(item))
        elif action in ("presence", "history"):
            await self.reply(socket, action, {"channel": request["channel"], "echo": request}, request_id)


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer() as scripted:
        yield scripted


@pytest.fixture
async def ws_client(server: ScriptedServer) -> AsyncIterator[WebSocketClient]:
    client = WebSocketClient("127.0.0.1", server.port, **FAST)
    yield client
    await client.disconnect()


def record(client: Any) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"reset": [], "reconnect": [], "connect": []}
    client.on_reset(seen["reset"].append)
    client.on_reconnect(seen["reconnect"].append)
    client.on_connect(seen["connect"].append)
    return seen


async def test_ws_resubscribes_with_its_epoch_and_a_reply_of_another_epoch_restarts_the_position(server, ws_client):
    history = [envelope("news", f"m{n}", n) for n in (1, 2, 3)]
    server.subscribed["news"] = [({"offset": 3, "epoch": "e1"}, history), ({"offset": 1, "epoch": "e2"}, [])]
    seen = record(ws_client)
    received: list[Any] = []
    ws_client.on_message("text")(lambda frame: received.append(frame["content"]))
    await ws_client.connect()
    reply = await ws_client.subscribe_to_channel("news")
    assert reply == {"channel": "news", "offset": 3, "epoch": "e1", "recovered": False}
    await eventually(lambda: len(received) == 3)
    assert (ws_client.offsets, ws_client.epochs) == ({"news": 3}, {"news": "e1"})

    await server.drop()  # meanwhile the history is reset and one message is published under e2

    await eventually(lambda: seen["reconnect"])
    assert server.subscribes(2) == [{"channel": "news", "since": 3, "epoch": "e1"}]
    assert seen["reset"] == [ResetContext("news", "e2", 1, resumed=True)]
    assert seen["reconnect"][0].recovered == {"news": False} == ws_client.recovery
    assert (ws_client.offsets, ws_client.epochs) == ({"news": 1}, {"news": "e2"})
    assert received == ["m1", "m2", "m3"], "nothing replayed under the old offsets"


async def test_ws_a_gap_in_the_same_epoch_is_not_a_reset_and_moves_to_the_head(server, ws_client):
    history = [envelope("news", f"m{n}", n) for n in (1, 2)]
    server.subscribed["news"] = [({"offset": 2, "epoch": "e1"}, history), ({"offset": 9, "epoch": "e1"}, [])]
    seen = record(ws_client)
    await ws_client.connect()
    await ws_client.subscribe_to_channel("news")
    await eventually(lambda: ws_client.offsets == {"news": 2})
    await server.drop()
    await eventually(lambda: seen["reconnect"])
    assert server.subscribes(2) == [{"channel": "news", "since": 2, "epoch": "e1"}]
    assert seen["reconnect"][0].recovered == {"news": False}
    assert seen["reset"] == []
    assert ws_client.offsets == {"news": 9}


async def test_ws_a_stream_reset_frame_restarts_the_position_at_zero_of_the_new_epoch(server, ws_client):
    server.subscribed["news"] = [({"offset": 5, "epoch": "e1"}, [])]
    seen = record(ws_client)
    frames: list[Any] = []
    ws_client.on_message("stream-reset")(frames.append)
    await ws_client.connect()
    await ws_client.subscribe_to_channel("news")

    await server.push({"type": "stream-reset", "content": {"channel": "news", "epoch": "e2", "offset": 0}})
    await server.push({"type": "stream-reset", "content": {"channel": "user:ann", "epoch": "u1", "offset": 0}})
    await eventually(lambda: len(seen["reset"]) == 2)
    assert seen["reset"] == [
        ResetContext("news", "e2", 0, resumed=False),
        ResetContext("user:ann", "u1", 0, resumed=False),
    ]
    assert (ws_client.offsets, ws_client.epochs) == ({"news": 0}, {"news": "e2"})
    await eventually(lambda: len(frames) == 2)  # handlers of the frame type see it too
    await server.push(envelope("news", "first of e2", 1))
    await eventually(lambda: ws_client.offsets == {"news": 1})

    await server.drop()
    await eventually(lambda: server.subscribes(2))
    assert server.subscribes(2) == [{"channel": "news", "since": 1, "epoch": "e2"}]


async def test_ws_server_side_channels_count_as_subscribed_and_resume_while_the_server_gives_them(server, ws_client):
    server.greetings = [
        {"channels": ["alerts"], "refused": {"private-x": "no grant"}, "info": {"plan": "pro"}},
        {"channels": ["alerts"]},
        {},
    ]
    server.subscribed["alerts"] = [({"offset": 4, "epoch": "a1", "recovered": True}, [])]
    seen = record(ws_client)
    alerts: list[Any] = []
    ws_client.on_message("text")(lambda frame: alerts.append(frame["content"]))
    await ws_client.connect()
    context = ws_client.connection
    assert (context.server_channels, context.refused, context.info) == (
        ["alerts"],
        {"private-x": "no grant"},
        {"plan": "pro"},
    )
    assert ws_client.channels == ws_client.server_channels == ["alerts"]
    await server.push(envelope("alerts", "fire", 4))
    await eventually(lambda: alerts == ["fire"])
    assert ws_client.offsets == {"alerts": 4}
    assert server.subscribes(1) == [], "joined by the server: no subscribe"

    await server.drop()
    await eventually(lambda: seen["reconnect"])
    assert server.subscribes(2) == [{"channel": "alerts", "since": 4}]  # resumed (no epoch known)
    assert seen["reconnect"][0].recovered == {"alerts": True}
    assert ws_client.epochs == {"alerts": "a1"}

    await server.drop()  # the next greeting has no server-side channel
    await eventually(lambda: len(seen["reconnect"]) == 2)
    assert ws_client.channels == [] and ws_client.server_channels == []
    assert server.subscribes(3) == []


async def test_ws_an_explicit_subscription_to_a_server_side_channel_makes_it_explicit(server, ws_client):
    server.greetings = [{"channels": ["alerts"]}, {}]
    seen = record(ws_client)
    await ws_client.connect()
    await ws_client.subscribe_to_channel("alerts")
    assert ws_client.server_channels == []
    await server.drop()
    await eventually(lambda: seen["reconnect"])
    assert ws_client.channels == ["alerts"]
    assert server.subscribes(2) == [{"channel": "alerts", "since": 0}]


async def test_ws_presence_counts_only_and_history_with_an_epoch(server, ws_client):
    await ws_client.connect()
    assert (await ws_client.presence("lobby", counts_only=True))["echo"] == {"channel": "lobby", "counts_only": True}
    assert (await ws_client.presence("lobby"))["echo"] == {"channel": "lobby"}
    page = await ws_client.history("news", since=4, epoch="e1")
    assert page["echo"] == {"channel": "news", "since": 4, "epoch": "e1"}


# -- a scripted SSE server -------------------------------------------------------------------------


class ScriptedStreams:
    """An httpx transport answering each stream request with a queue of SSE text the test feeds."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.queues: list[asyncio.Queue[str | None]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.requests.append(request)
        self.queues.append(queue)

        async def body() -> AsyncIterator[bytes]:
            while (text := await queue.get()) is not None:
                yield text.encode()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    def send(self, event: str, data: Any, id: str | None = None, stream: int = -1) -> None:
        self.queues[stream].put_nowait(
            f"{f'id: {id}' + chr(10) if id else ''}event: {event}\ndata: {json.dumps(data)}\n\n"
        )

    def greet(self, stream: int = -1, **data: Any) -> None:
        greeting = {"connection_id": "s1", "user_id": None, "heartbeat_interval": 30, **data}
        self.send("connected", {"type": "connected", "data": greeting}, stream=stream)

    def end(self, stream: int = -1) -> None:
        self.queues[stream].put_nowait(None)


@pytest.fixture
async def streams() -> AsyncIterator[tuple[ScriptedStreams, SSEClient]]:
    scripted = ScriptedStreams()
    client = SSEClient("127.0.0.1", 8000, channels=["news"], **FAST)
    client._http = httpx.AsyncClient(transport=httpx.MockTransport(scripted.handle))
    yield scripted, client
    for queue in scripted.queues:
        queue.put_nowait(None)
    await client.disconnect()


async def connect_sse(scripted: ScriptedStreams, client: SSEClient, **greeting: Any) -> None:
    connecting = asyncio.create_task(client.connect())
    await eventually(lambda: scripted.queues)
    scripted.greet(**greeting)
    await connecting


async def test_sse_a_live_stream_reset_and_a_resumption_of_another_epoch_are_reported(streams):
    scripted, client = streams
    seen = record(client)
    await connect_sse(scripted, client, channels=["news", "alerts", "broadcast"], info={"plan": "pro"})
    assert client.server_channels == ["alerts"]
    assert client.connection.info == {"plan": "pro"}
    scripted.send("stream-open", {"channels": ["news", "alerts"], "offsets": {"news": 4}}, "news:4-e1,alerts:2-a1")
    scripted.send("stream-reset", {"channels": ["news"]}, "news:0-e2,alerts:2-a1")
    await eventually(lambda: seen["reset"])
    assert seen["reset"] == [ResetContext("news", "e2", 0, resumed=False)]
    scripted.send("text", envelope("news", "first of e2", 1), "news:1-e2,alerts:2-a1")
    await eventually(lambda: client.positions == {"news": (1, "e2"), "alerts": (2, "a1")})

    scripted.end()  # the stream drops; meanwhile the history is reset again, and 3 messages follow
    await eventually(lambda: len(scripted.requests) == 2)
    assert scripted.requests[1].headers["last-event-id"] == "news:1-e2,alerts:2-a1"
    assert scripted.requests[1].url.params["channels"] == "news", "the server adds its own channels"
    scripted.greet(channels=["news", "alerts", "broadcast"])
    scripted.send("stream-reset", {"channels": ["news"]}, "news:3-e3,alerts:2-a1")
    scripted.send("stream-open", {"channels": ["news", "alerts"]}, "news:3-e3,alerts:2-a1")
    await eventually(lambda: seen["reconnect"])
    assert seen["reset"][1:] == [ResetContext("news", "e3", 3, resumed=True)]
    assert seen["reconnect"][0].recovered == {"news": False, "alerts": True} == client.recovery


async def test_sse_a_trimmed_history_is_a_gap_not_a_reset(streams):
    scripted, client = streams
    seen = record(client)
    client.last_event_id = "news:2-e1"
    await connect_sse(scripted, client)
    scripted.send("stream-reset", {"channels": ["news"]}, "news:9-e1")
    scripted.send("stream-open", {"channels": ["news"]}, "news:9-e1")
    await eventually(lambda: client.positions == {"news": (9, "e1")})
    await asyncio.sleep(0.05)
    assert seen["reset"] == []
