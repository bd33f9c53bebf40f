"""Recovery on both transports: replay on subscribe, `since`, `Last-Event-ID`, and the replay→live boundary.

In-process: WebsocketCommunicator for WS, the ASGI app driven directly for SSE, one in-memory bus.
"""

from __future__ import annotations

import asyncio
import json
import random
from unittest.mock import ANY

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator

from streaming import services
from streaming.models import ChannelMessage
from tests.support.clients import without_epochs
from tests.support.consumers import request

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _quiet_database_thread(ws_app):
    """Stop the registry task and let its last write finish before the database is flushed."""
    yield
    from channels.db import database_sync_to_async

    from streaming.runtime import get_runtime

    await get_runtime().registry.stop()
    await database_sync_to_async(lambda: None)()  # queued behind any write still in the DB thread


async def persist(channel: str, count: int, start: int = 0) -> list[services.Published]:
    return [
        await services.apublish_to_channel(channel=channel, content={"n": n}, persist=True)
        for n in range(start, start + count)
    ]


async def receive_messages(communicator, count: int) -> list[dict]:
    return [await communicator.receive_json_from(timeout=3) for _ in range(count)]


class SSEStream:
    """GET /sse/connect on the ASGI app, read event by event (`id`, `event`, `data`)."""

    def __init__(self, app, query: str = "", headers: list[tuple[bytes, bytes]] | None = None) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/sse/connect",
            "raw_path": b"/sse/connect",
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"testserver"), *(headers or [])],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        self.communicator = ApplicationCommunicator(app, scope)
        self.buffer = ""
        self.ended = False

    async def open(self) -> SSEStream:
        await self.communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.communicator.receive_output(timeout=3)
        assert start["type"] == "http.response.start" and start["status"] == 200, start
        return self

    async def next_event(self, timeout: float = 3, skip: tuple[str, ...] = ("heartbeat",)) -> dict:
        while True:
            while "\n\n" not in self.buffer:
                chunk = await self.communicator.receive_output(timeout=timeout)
                self.buffer += chunk["body"].decode()
                if not chunk.get("more_body", False):
                    self.ended = True
            block, self.buffer = self.buffer.split("\n\n", 1)
            event: dict = {"id": None}
            for line in block.splitlines():
                name, _, value = line.partition(": ")
                event[name] = json.loads(value) if name == "data" else value
            if "event" in event and event["event"] not in skip:
                return event

    async def until(self, name: str, timeout: float = 3) -> dict:
        while True:
            event = await self.next_event(timeout, skip=())
            if event["event"] == name:
                return event

    async def receive_nothing(self, timeout: float = 0.2) -> bool:
        if "\n\n" in self.buffer:
            return False
        return await self.communicator.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(timeout=3)


# ---------------------------------------------------------------------------------------------
# WebSocket: replay on subscribe


async def test_new_subscriber_gets_retained_history_oldest_first_then_live(connect):
    published = await persist("replayed", 3)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "replayed"})
    assert reply["content"] == {"channel": "replayed", "offset": 3, "epoch": ANY, "recovered": False}
    history = await receive_messages(communicator, 3)
    assert [m["offset"] for m in history] == [1, 2, 3]
    assert [m["id"] for m in history] == [p.id for p in published]
    assert [m["content"] for m in history] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(m["channel"] == "replayed" and m["type"] == "message" for m in history)
    live = await services.apublish_to_channel(channel="replayed", content="live", persist=True)
    frame = await communicator.receive_json_from(timeout=3)
    assert frame["id"] == live.id and frame["offset"] == 4 and frame["content"] == "live"
    not_persisted = await services.apublish_to_channel(channel="replayed", content="fleeting")
    frame = await communicator.receive_json_from(timeout=3)
    assert frame["id"] == not_persisted.id and frame["offset"] is None
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_new_subscriber_gets_only_what_retention_kept(connect, realtime):
    realtime(channel_history_size=2)
    await persist("kept", 5)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "kept"})
    assert reply["content"] == {"channel": "kept", "offset": 5, "epoch": ANY, "recovered": False}
    assert [m["offset"] for m in await receive_messages(communicator, 2)] == [4, 5]
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_not_persisted_messages_are_not_replayed(connect):
    await services.apublish_to_channel(channel="ephemeral", content="gone")
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "ephemeral"})
    assert reply["content"] == {"channel": "ephemeral", "offset": 0, "epoch": ANY, "recovered": False}
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_subscribe_since_returns_exactly_the_missed_messages(connect):
    published = await persist("resume", 5)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "resume", "since": 2})
    assert reply["content"] == {"channel": "resume", "offset": 5, "epoch": ANY, "recovered": True}
    missed = await receive_messages(communicator, 3)
    assert [m["offset"] for m in missed] == [3, 4, 5]
    assert [m["id"] for m in missed] == [p.id for p in published[2:]]
    assert await communicator.receive_nothing(timeout=0.2)
    live = await services.apublish_to_channel(channel="resume", content="next", persist=True)
    assert (await communicator.receive_json_from(timeout=3))["id"] == live.id
    await communicator.disconnect()


async def test_subscribe_since_the_head_recovers_nothing_missing(connect):
    await persist("uptodate", 3)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "uptodate", "since": 3})
    assert reply["content"] == {"channel": "uptodate", "offset": 3, "epoch": ANY, "recovered": True}
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_subscribe_since_older_than_retention_is_not_recovered(connect, realtime):
    realtime(channel_history_size=2)
    await persist("toolate", 5)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "toolate", "since": 1})
    assert reply["content"] == {"channel": "toolate", "offset": 5, "epoch": ANY, "recovered": False}
    # what is still retained follows, without pretending to be complete
    assert [m["offset"] for m in await receive_messages(communicator, 2)] == [4, 5]
    live = await services.apublish_to_channel(channel="toolate", content="next", persist=True)
    assert (await communicator.receive_json_from(timeout=3))["id"] == live.id
    await communicator.disconnect()


async def test_subscribe_since_older_than_ttl_is_not_recovered(connect, realtime):
    from datetime import timedelta

    from django.utils import timezone

    realtime(channel_history_ttl=60)
    await persist("expired", 4)
    await ChannelMessage.objects.filter(channel_id="expired", offset__lte=2).aupdate(
        created_at=timezone.now() - timedelta(seconds=120)
    )
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "expired", "since": 1})
    assert reply["content"]["recovered"] is False
    assert [m["offset"] for m in await receive_messages(communicator, 2)] == [3, 4]
    await communicator.disconnect()


async def test_subscribe_since_beyond_the_head_still_gets_live_messages(connect):
    await persist("reset", 2)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "reset", "since": 50})
    assert reply["content"] == {"channel": "reset", "offset": 2, "epoch": ANY, "recovered": False}
    live = await services.apublish_to_channel(channel="reset", content="after the reset", persist=True)
    assert live.offset == 3
    assert (await communicator.receive_json_from(timeout=1))["id"] == live.id
    await communicator.disconnect()


async def test_full_default_history_replays_without_closing_the_subscriber(connect):
    await persist("full", 100)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "full"})
    assert reply["content"]["offset"] == 100
    frames = await receive_messages(communicator, 100)
    assert [m["offset"] for m in frames] == list(range(1, 101))
    await communicator.disconnect()


RETAINED, LIVE = 300, 40


async def publish_during_a_paced_replay(channel: str) -> None:
    """RETAINED messages through an outbox of 2 make a paced replay; LIVE more arrive meanwhile."""
    for n in range(RETAINED, RETAINED + LIVE):
        await services.apublish_to_channel(channel=channel, content={"n": n}, persist=True)


async def test_live_messages_during_a_paced_ws_replay_queue_behind_it(connect, realtime):
    realtime(websocket_message_queue_size=2, channel_history_size=500)
    await persist("paced-ws", RETAINED)
    communicator = await connect()
    await communicator.send_json_to({"action": "subscribe", "data": {"channel": "paced-ws"}, "request_id": "s"})
    await publish_during_a_paced_replay("paced-ws")
    frames = []
    while not frames or frames[-1].get("offset") != RETAINED + LIVE:
        output = await communicator.receive_output(timeout=3)
        assert output["type"] == "websocket.send", f"closed after {[f.get('offset') for f in frames]}: {output}"
        frames.append(json.loads(output["text"]))
    assert frames[0]["type"] == "subscribed"
    check_persisted(frames[1:], 1, RETAINED + LIVE)
    await communicator.disconnect()


async def test_live_messages_during_a_paced_sse_replay_queue_behind_it(ws_app, realtime):
    realtime(websocket_message_queue_size=2, channel_history_size=500)
    await persist("paced-sse", RETAINED)
    stream = await SSEStream(ws_app, "channels=paced-sse").open()
    await publish_during_a_paced_replay("paced-sse")
    events = []
    while not events or events[-1]["data"]["offset"] != RETAINED + LIVE:
        event = await stream.next_event()
        assert event["event"] != "stream-error", f"closed after {[e['id'] for e in events]}: {event}"
        if event["event"] not in ("connected", "stream-open"):
            events.append(event)
    check_persisted([e["data"] for e in events], 1, RETAINED + LIVE)
    assert [without_epochs(e["id"]) for e in events] == [f"paced-sse:{n}" for n in range(1, RETAINED + LIVE + 1)]
    await stream.close()


async def test_resubscribing_with_since_replays_only_after_it_and_no_live_duplicates(connect):
    communicator = await connect()
    await request(communicator, "subscribe", {"channel": "again"})
    first = await persist("again", 3)
    assert [m["id"] for m in await receive_messages(communicator, 3)] == [p.id for p in first]
    reply = await request(communicator, "subscribe", {"channel": "again", "since": 2})
    assert reply["content"] == {"channel": "again", "offset": 3, "epoch": ANY, "recovered": True}
    assert (await communicator.receive_json_from(timeout=3))["offset"] == 3
    await persist("again", 1, start=3)
    assert (await communicator.receive_json_from(timeout=3))["offset"] == 4
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


# ---------------------------------------------------------------------------------------------
# WebSocket: the history action


async def test_history_action_pages_with_limit_since_and_has_more(connect):
    published = await persist("paged", 5)
    communicator = await connect()
    seen, since = [], 0
    for expected_more in (True, True, False):
        reply = await request(communicator, "history", {"channel": "paged", "since": since, "limit": 2})
        content = reply["content"]
        assert reply["type"] == "history" and reply["request_id"] == "r1"
        assert content["channel"] == "paged" and content["offset"] == 5 and content["recovered"] is True
        assert content["has_more"] is expected_more
        seen += content["messages"]
        since = content["messages"][-1]["offset"]
    assert [m["id"] for m in seen] == [p.id for p in published]
    reply = await request(communicator, "history", {"channel": "paged"})
    assert [m["offset"] for m in reply["content"]["messages"]] == [1, 2, 3, 4, 5]
    assert reply["content"]["recovered"] is False
    # history does not subscribe
    await persist("paged", 1, start=5)
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_history_action_reports_not_recovered_when_retention_was_exceeded(connect, realtime):
    realtime(channel_history_size=3)
    await persist("short", 6)
    communicator = await connect()
    reply = await request(communicator, "history", {"channel": "short", "since": 1})
    assert reply["content"]["recovered"] is False
    assert [m["offset"] for m in reply["content"]["messages"]] == [4, 5, 6]
    reply = await request(communicator, "history", {"channel": "short", "since": 3})
    assert reply["content"]["recovered"] is True
    await communicator.disconnect()


# ---------------------------------------------------------------------------------------------
# The replay→live boundary under races


def check_persisted(frames: list[dict], first: int, last: int) -> None:
    """Persisted messages: exactly `first..last`, in order, each once."""
    offsets = [f["offset"] for f in frames if f["offset"] is not None]
    assert offsets == list(range(first, last + 1)), f"expected {first}..{last}, got {offsets}"


def check_unique(frames: list[dict]) -> None:
    ids = [f["id"] for f in frames]
    assert len(ids) == len(set(ids)), "a message was delivered twice"


async def test_replay_to_live_boundary_delivers_each_message_once_on_both_transports(connect, ws_app, realtime):
    """A publisher keeps publishing (persisted and not) while WS and SSE subscribers keep joining.

    Every subscriber must see the persisted offsets from where it started to the end with no gap,
    no repeat and no reordering; and every non-persisted message published after its history
    read (offset > the head it was told) must reach it, once.
    """
    realtime(channel_history_size=1000, websocket_message_queue_size=5000, client_rate_limit=0)
    channel, total = "boundary", 400
    rng = random.Random(5)
    published: list[services.Published] = []
    fleeting: dict[str, int] = {}  # id of a non-persisted message → offset of the persisted one before it
    finished = asyncio.Event()

    async def publisher() -> None:
        for n in range(total):
            published.append(await services.apublish_to_channel(channel=channel, content=n, persist=True))
            if n % 2:
                sent = await services.apublish_to_channel(channel=channel, content=f"fleeting-{n}")
                fleeting[sent.id] = published[-1].offset
            if n % 7 == 0:
                await asyncio.sleep(0)
        # a persisted last message: when a subscriber has it, it has had everything before it
        published.append(await services.apublish_to_channel(channel=channel, content="end", persist=True))
        finished.set()

    ws_subscribers: list[tuple] = []  # (communicator, since)
    sse_subscribers: list[tuple] = []  # (stream, since)

    async def joiner() -> None:
        index = 0
        while not finished.is_set():
            if len(ws_subscribers) + len(sse_subscribers) >= 400:  # within both transports' limits
                await asyncio.sleep(0.01)
                continue
            index += 1
            since = None
            if index % 3 == 0 and published:
                since = rng.randint(0, published[-1].offset)
            if index % 4 == 0:
                header = [(b"last-event-id", f"{channel}:{since}".encode())] if since is not None else []
                stream = await SSEStream(ws_app, f"channels={channel}", header).open()
                sse_subscribers.append((stream, since))
            else:
                communicator = await connect()
                data = {"channel": channel} if since is None else {"channel": channel, "since": since}
                await communicator.send_json_to({"action": "subscribe", "data": data, "request_id": "s"})
                ws_subscribers.append((communicator, since))
            await asyncio.sleep(rng.random() * 0.004)

    await asyncio.gather(publisher(), joiner())
    assert len(ws_subscribers) >= 20 and len(sse_subscribers) >= 5, (len(ws_subscribers), len(sse_subscribers))
    last = published[-1].offset
    assert last == total + 1

    for communicator, since in ws_subscribers:
        reply = await communicator.receive_json_from(timeout=5)
        assert reply["type"] == "subscribed" and reply["request_id"] == "s", reply
        head = reply["content"]["offset"]
        assert reply["content"]["recovered"] is (since is not None)
        frames = []
        while not frames or frames[-1]["offset"] != last:
            frames.append(await communicator.receive_json_from(timeout=5))
        check_persisted(frames, 1 if since is None else since + 1, last)
        check_unique(frames)
        received = {f["id"] for f in frames if f["offset"] is None}
        assert received <= set(fleeting)
        owed = {message_id for message_id, after in fleeting.items() if after > head}
        assert owed <= received, f"{len(owed - received)} live messages lost after the history read"
        await communicator.disconnect()

    for stream, since in sse_subscribers:
        await stream.until("connected")
        frames = []
        while not frames or frames[-1]["offset"] != last:
            event = await stream.next_event(timeout=5)
            if event["event"] == "stream-open":
                continue
            frames.append(event["data"])
            if event["data"]["offset"] is not None:
                assert without_epochs(event["id"]) == f"{channel}:{event['data']['offset']}"
        check_persisted(frames, 1 if since is None else since + 1, last)
        check_unique(frames)
        await stream.close()


async def replay_race(server, channel: str, total: int = 200) -> int:
    """The boundary race against a real server: one HTTP publisher, WebSocket subscribers joining.

    The server's DB reads run beside its publishing request threads, so messages commit while a
    subscriber reads its history. Returns how many subscribers were checked.
    """
    rng = random.Random(11)
    published: list[dict] = []
    fleeting: dict[str, int] = {}
    finished = asyncio.Event()
    subscribers: list[tuple] = []
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:

        async def post(body: dict) -> dict:
            response = await http.post("/ws/send-to-channel", json=body)
            assert response.status_code == 202, response.text[:500]
            return response.json()

        async def publisher() -> None:
            for n in range(total):
                published.append(await post({"channel": channel, "message": {"content": n}, "persist": True}))
                if n % 2:
                    sent = await post({"channel": channel, "message": {"content": f"fleeting-{n}"}})
                    fleeting[sent["id"]] = published[-1]["offset"]
            published.append(await post({"channel": channel, "message": {"content": "end"}, "persist": True}))
            finished.set()

        async def joiner() -> None:
            index = 0
            while not finished.is_set():
                index += 1
                since = rng.randint(0, published[-1]["offset"]) if index % 3 == 0 and published else None
                socket = await websockets.connect(server.ws + "/ws/connect", max_size=None)
                assert json.loads(await socket.recv())["type"] == "connected"
                data = {"channel": channel} if since is None else {"channel": channel, "since": since}
                await socket.send(json.dumps({"action": "subscribe", "data": data, "request_id": "s"}))
                subscribers.append((socket, since))
                await asyncio.sleep(rng.uniform(0.02, 0.08))

        await asyncio.gather(publisher(), joiner())
    last = published[-1]["offset"]
    assert [p["offset"] for p in published] == list(range(1, total + 2))
    for socket, since in subscribers:
        reply = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert reply["type"] == "subscribed" and reply["content"]["recovered"] is (since is not None), reply
        frames: list[dict] = []
        while not frames or frames[-1]["offset"] != last:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
            if frame["type"] != "heartbeat":
                frames.append(frame)
        check_persisted(frames, 1 if since is None else since + 1, last)
        check_unique(frames)
        owed = {message_id for message_id, after in fleeting.items() if after > reply["content"]["offset"]}
        assert owed <= {f["id"] for f in frames}, "live messages lost after the history read"
        await socket.close()
    return len(subscribers)


@pytest.mark.server
async def test_replay_to_live_boundary_against_a_real_server(live_server_factory):
    server = live_server_factory(CHANNEL_HISTORY_SIZE="2000", WEBSOCKET_MESSAGE_QUEUE_SIZE="5000")
    assert await replay_race(server, "boundary-live") >= 20


# ---------------------------------------------------------------------------------------------
# SSE: the same history as WS `since`


async def test_last_event_id_and_ws_since_replay_the_same_rows(connect, ws_app):
    await persist("agree", 6)
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "agree", "since": 2})
    assert reply["content"]["recovered"] is True
    over_ws = await receive_messages(communicator, 4)
    stream = await SSEStream(ws_app, "channels=agree", [(b"last-event-id", b"agree:2")]).open()
    await stream.until("connected")
    over_sse = [await stream.next_event() for _ in range(4)]
    opened = await stream.next_event()
    assert [e["data"] for e in over_sse] == over_ws  # the same envelopes, byte for byte
    assert [without_epochs(e["id"]) for e in over_sse] == ["agree:3", "agree:4", "agree:5", "agree:6"]
    assert [e["event"] for e in over_sse] == ["message"] * 4
    assert opened["event"] == "stream-open" and without_epochs(opened["id"]) == "agree:6"
    rows = [m async for m in ChannelMessage.objects.filter(channel_id="agree", offset__gt=2).order_by("offset")]
    assert [m["id"] for m in over_ws] == [row.message_id for row in rows]
    await stream.close()
    await communicator.disconnect()


@pytest.mark.parametrize("via", ["header", "query"])
async def test_sse_resumes_from_last_event_id_then_goes_live(ws_app, via):
    published = await persist("sse-resume", 4)
    headers = [(b"last-event-id", b"sse-resume:1")] if via == "header" else []
    query = "channels=sse-resume" + ("&lastEventId=sse-resume%3A1" if via == "query" else "")
    stream = await SSEStream(ws_app, query, headers).open()
    await stream.until("connected")
    replayed = [await stream.next_event() for _ in range(3)]
    assert [e["data"]["id"] for e in replayed] == [p.id for p in published[1:]]
    assert [without_epochs(e["id"]) for e in replayed] == ["sse-resume:2", "sse-resume:3", "sse-resume:4"]
    assert (await stream.next_event())["event"] == "stream-open"
    live = await services.apublish_to_channel(channel="sse-resume", content="live", persist=True)
    event = await stream.next_event()
    assert event["data"]["id"] == live.id and without_epochs(event["id"]) == "sse-resume:5"
    assert await stream.receive_nothing()
    await stream.close()


async def test_sse_new_stream_gets_retained_history_and_a_position(ws_app):
    await persist("sse-new", 2)
    stream = await SSEStream(ws_app, "channels=sse-new").open()
    await stream.until("connected")
    history = [await stream.next_event() for _ in range(2)]
    assert [without_epochs(e["id"]) for e in history] == ["sse-new:1", "sse-new:2"]
    opened = await stream.next_event()
    assert opened["event"] == "stream-open" and without_epochs(opened["id"]) == "sse-new:2"
    await stream.close()


async def test_sse_position_too_old_gets_stream_reset_and_ws_is_not_recovered(connect, ws_app, realtime):
    realtime(channel_history_size=2)
    await persist("sse-old", 5)
    stream = await SSEStream(ws_app, "channels=sse-old", [(b"last-event-id", b"sse-old:1")]).open()
    await stream.until("connected")
    reset = await stream.next_event()
    assert reset["event"] == "stream-reset" and reset["data"] == {"channels": ["sse-old"]}
    assert without_epochs(reset["id"]) == "sse-old:5"
    assert (await stream.next_event())["event"] == "stream-open"
    live = await services.apublish_to_channel(channel="sse-old", content="after reset", persist=True)
    event = await stream.next_event()
    assert event["data"]["id"] == live.id and without_epochs(event["id"]) == "sse-old:6"
    await stream.close()
    communicator = await connect()
    reply = await request(communicator, "subscribe", {"channel": "sse-old", "since": 1})
    assert reply["content"]["recovered"] is False
    await communicator.disconnect()


async def test_django_eventstream_send_event_persists_and_reaches_ws_and_sse(connect, ws_app):
    from django_eventstream import send_event

    communicator = await connect()
    await request(communicator, "subscribe", {"channel": "legacy"})
    stream = await SSEStream(ws_app, "channels=legacy").open()
    await stream.until("stream-open")
    await sync_to_async(send_event)("legacy", "news_update", {"title": "Новая статья"})
    frame = await communicator.receive_json_from(timeout=3)
    assert frame["type"] == "news_update" and frame["content"] == {"title": "Новая статья"}
    assert frame["channel"] == "legacy" and frame["offset"] == 1
    event = await stream.next_event()
    assert event["event"] == "news_update" and without_epochs(event["id"]) == "legacy:1" and event["data"] == frame
    row = await ChannelMessage.objects.aget(channel_id="legacy", offset=1)
    assert row.message_id == frame["id"] and row.type == "news_update"
    assert await communicator.receive_nothing(timeout=0.2)
    await stream.close()
    await communicator.disconnect()


async def test_eventstream_storage_reads_the_same_history(realtime):
    from django_eventstream.storage import EventDoesNotExist

    from streaming.eventstream import HistoryStorage

    realtime(channel_history_size=3)
    published = await persist("storage", 5)
    storage = HistoryStorage()
    assert await sync_to_async(storage.get_current_id)("storage") == 5
    events = await sync_to_async(storage.get_events)("storage", 3)
    assert [e.id for e in events] == [4, 5]
    assert [json.loads(e.data)["id"] for e in events] == [p.id for p in published[3:]]
    assert await sync_to_async(storage.get_events)("storage", 5) == []
    with pytest.raises(EventDoesNotExist) as missing:
        await sync_to_async(storage.get_events)("storage", 1)
    assert missing.value.current_id == 5
