"""SSE conformance (WHATWG HTML, "Server-sent events"), read with an independent parser (httpx-sse).

Already covered elsewhere, not repeated here: the headers (`text/event-stream`, `no-cache`,
`X-Accel-Buffering: no`), `retry:` and the greeting (tests/streaming/test_sse.py
`test_stream_headers_retry_and_greeting`), heartbeats (`test_heartbeat_every_interval`), a position
too old for history gets `stream-reset` (`test_position_too_old_gets_stream_reset`,
tests/streaming/test_recovery.py `test_sse_position_too_old_gets_stream_reset_and_ws_is_not_recovered`).

Here: payloads with CR, LF, NUL, U+2028/2029 and friends round-trip exactly through the real
server (10,000 in `make test-reliability`), the encoder against the WHATWG line rules, an idle
stream kept alive, and a `Last-Event-ID` resume after a drop in the middle of 100 messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as ws_connect

from streaming.sse import sse_event
from tests.support.clients import SSEReader

pytestmark = pytest.mark.server

# Characters a stream must carry verbatim inside data: the SSE line breaks (CR, LF), NUL, the
# Unicode line separators that `str.splitlines` (but not SSE) breaks on, and field look-alikes.
AWKWARD = ["\r", "\n", "\r\n", "\x00", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\ufeff",
           "data: x", "id: 7", "event: y", "retry: 1", ":", "\n\n", "😀", "Ё"]  # fmt: skip
text = st.lists(st.sampled_from(AWKWARD) | st.text(max_size=8), max_size=12).map("".join)
payloads = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)


def parse(raw: str) -> list[Any]:
    """Events of a complete stream chunk, as httpx-sse decodes them."""
    lines, decoder, events = SSELineDecoder(), SSEDecoder(), []
    for line in [*lines.decode(raw), *lines.flush()]:
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events


# ---------------------------------------------------------------------------------------------
# The encoder


@pytest.mark.parametrize(
    "examples", [pytest.param(500, id="fast"), pytest.param(10_000, id="full", marks=pytest.mark.reliability)]
)
def test_encoder_keeps_multi_line_data_and_event_names_exact(examples):
    """Data with LF splits into several `data:` lines and is joined back exactly; CR is a line
    break too (WHATWG), so CR and CRLF come back as LF, the only lossless form a stream can carry."""

    @settings(max_examples=examples, deadline=None, database=None)
    @given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True), data=text, event_id=text)
    def check(name: str, data: str, event_id: str) -> None:
        (event,) = parse(sse_event(name, data, event_id or None).decode())
        assert event.event == name
        assert event.data == data.replace("\r\n", "\n").replace("\r", "\n")
        assert event.id == "".join(c for c in event_id if c not in "\r\n\x00")

    check()


# ---------------------------------------------------------------------------------------------
# Through the server


@pytest.fixture(scope="module")
def sse_server(live_server_factory):
    return live_server_factory(CLIENT_RATE_LIMIT="0", SSE_HEARTBEAT_INTERVAL="1", CHANNEL_HISTORY_SIZE="200")


class StreamThread:
    """An SSE stream read by httpx-sse in a thread; events go to a queue (heartbeats left out)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: queue.Queue = queue.Queue()
        self.opened = threading.Event()
        self.stop = threading.Event()
        self.headers: httpx.Headers | None = None
        self.heartbeats: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StreamThread:
        self.thread.start()
        assert self.opened.wait(10), "the stream did not open"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=30)) as http, connect_sse(http, "GET", self.url) as source:
            self.headers = source.response.headers
            for event in source.iter_sse():
                if event.event == "stream-open":
                    self.opened.set()
                elif event.event == "heartbeat":
                    self.heartbeats.append(time.monotonic())
                else:
                    self.events.put(event)
                if self.stop.is_set():
                    return

    def next(self, event_name: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if event.event == event_name:
                return event


@pytest.mark.parametrize(
    "examples", [pytest.param(300, id="fast"), pytest.param(10_000, id="full", marks=pytest.mark.reliability)]
)
# 10,000 generated payloads take ~110 s on a quiet 2-core machine: past the default 120 s when busy.
@pytest.mark.timeout(600)
def test_payloads_round_trip_exactly_from_websocket_publish_to_sse(sse_server, examples, figure):
    """Each generated payload is published by a WebSocket client and must come out of the SSE
    stream, decoded by httpx-sse, equal to what was sent — and so must its envelope id."""
    channel = f"conformance-{examples}"
    checked = 0
    with (
        StreamThread(f"{sse_server.http}/sse/connect?channels={channel}") as stream,
        ws_connect(f"{sse_server.ws}/ws/connect", max_size=None) as publisher,
    ):
        publisher.recv(5)  # greeting

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(payload=payloads)
        def round_trip(payload: Any) -> None:
            nonlocal checked
            publisher.send(json.dumps({"action": "send_to_channel", "data": {"channel": channel, "content": payload}}))
            ack = {"type": "heartbeat"}
            while ack["type"] == "heartbeat":
                ack = json.loads(publisher.recv(5))
            assert ack["type"] == "ack", ack
            envelope: dict = {}
            while envelope.get("id") != ack["content"]["id"]:  # (after a failure, hypothesis replays)
                envelope = json.loads(stream.next("text").data)
            assert envelope["content"] == payload
            checked += 1

        round_trip()
    figure(payloads_round_tripped=checked, mismatches=0)
    assert checked >= examples * 0.9  # hypothesis may stop early only once it has run out of new inputs


def test_an_idle_stream_is_kept_alive_and_every_line_is_a_field(sse_server):
    """Nothing published for 3.5 s: the stream still carries a keep-alive every
    SSE_HEARTBEAT_INTERVAL (`event: heartbeat`; the product sends no comment lines), and every raw
    line is a WHATWG field line (`name: value`) or a blank line ending an event."""
    raw = b""
    with (
        httpx.Client(timeout=10) as http,
        http.stream("GET", f"{sse_server.http}/sse/connect?channels=idle") as response,
    ):
        started = time.monotonic()
        for chunk in response.iter_bytes():
            raw += chunk
            if time.monotonic() - started > 3.5:
                break
    text = raw.decode()
    assert text.count("event: heartbeat\n") >= 3
    for line in text.split("\n")[:-1]:
        assert line == "" or line.split(": ", 1)[0] in ("event", "data", "id", "retry"), line


async def test_last_event_id_resume_after_a_drop_mid_way_loses_and_repeats_nothing(sse_server, figure):
    """100 persisted messages published at 100/s; the reader drops after 40 and comes back with
    its Last-Event-ID while publishing goes on: every message exactly once, in order."""
    channel, total, drop_after = "resume-midway", 100, 40
    first: list[dict] = []
    async with httpx.AsyncClient(timeout=10) as http:

        async def publish() -> list[int]:
            offsets = []
            for n in range(total):
                body = {"channel": channel, "message": {"content": n}, "persist": True}
                response = await http.post(sse_server.http + "/ws/send-to-channel", json=body)
                assert response.status_code == 202, response.text
                offsets.append(response.json()["offset"])
                await asyncio.sleep(0.01)
            return offsets

        reader = await SSEReader(f"{sse_server.http}/sse/connect?channels={channel}").__aenter__()
        await reader.until("stream-open")
        publisher = asyncio.create_task(publish())
        while len(first) < drop_after:
            event = await reader.next_event()
            if event["event"] == "message":
                first.append(event)
        await reader.__aexit__(None, None, None)  # dropped mid-way
        await asyncio.sleep(0.1)
        second: list[dict] = []
        resumed = SSEReader(f"{sse_server.http}/sse/connect?channels={channel}", {"Last-Event-ID": first[-1]["id"]})
        async with resumed:
            offsets = await publisher
            while not second or second[-1]["data"]["offset"] < offsets[-1]:
                event = await resumed.next_event()
                if event["event"] == "message":
                    second.append(event)
            with contextlib.suppress(TimeoutError):
                while True:  # nothing more may come
                    event = await resumed.next_event(timeout=0.5)
                    if event["event"] == "message":
                        second.append(event)
    delivered = [e["data"]["offset"] for e in first + second]
    ids = [e["data"]["id"] for e in first + second]
    lost = sorted(set(offsets) - set(delivered))
    duplicated = len(delivered) - len(set(delivered))
    figure(published=total, dropped_after=drop_after, resumed=len(second), lost=len(lost), duplicated=duplicated)
    assert delivered == offsets, f"lost {lost}, duplicated {duplicated}"
    assert len(ids) == len(set(ids))
