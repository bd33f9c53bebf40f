"""One load-generator worker process: holds many WebSocket or SSE clients and measures delivery.

Run by `bench.run`: `python -m bench.loadgen OPTIONS.json` (the options name the URLs, one per
client or one for all, the source address, the transport and dialect, and the client count).
Every client subscribes to `channel`, or, when the options carry `channels` (one per client), to its
own one. The worker opens its connections from its own 127.x.y.z source address (each address has
its own ephemeral ports), prints one JSON line when they are ready, then obeys one-word commands on
stdin:

    reset [SEQ]  forget what was received so far (start of a measured round); with SEQ, ignore
             markers of lower sequence numbers from then on (late deliveries of an earlier round)
    open     open the clients (when not opened at start), `concurrency` handshakes in flight
    storm    open the clients all at once
    close    drop every connection
    count    print the received count alone (cheap to poll)
    report   print the received counts, the latency histogram and per-message worst latency
    quit     close everything and exit

Published payloads carry a marker `~<seq>~<publish time in µs>~`; clients find it with one regex
search per frame (no JSON decoding), so a worker on one core receives well over 100k frames/s.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from typing import Any

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

MARKER = re.compile(rb"~(\d+)~(\d+)~")
BUCKET_US = 100  # latency histogram resolution


class Stats:
    """What this worker's clients received since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, floor: int = 0) -> None:
        self.floor = floor
        self.heartbeats = 0
        self.frames = 0
        self.last_us = 0  # when the newest marker arrived
        self.hist: Counter[int] = Counter()
        self.per_seq: dict[int, list[int]] = {}  # seq → [deliveries, worst latency µs]

    def record(self, payload: bytes, now_us: int) -> int:
        """Count every marker in `payload`; returns where the last one ended."""
        end = 0
        for match in MARKER.finditer(payload):
            end = match.end()
            self.last_us = now_us
            seq = int(match.group(1))
            if seq < self.floor:
                continue
            latency = now_us - int(match.group(2))
            self.frames += 1
            self.hist[latency // BUCKET_US] += 1
            entry = self.per_seq.get(seq)
            if entry is None:
                self.per_seq[seq] = [1, latency]
            else:
                entry[0] += 1
                if latency > entry[1]:
                    entry[1] = latency
        return end

    def report(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "heartbeats": self.heartbeats,
            "last_us": self.last_us,
            "hist": dict(self.hist),
            "per_seq": self.per_seq,
        }


STATS = Stats()


def now_us() -> int:
    return time.time_ns() // 1000


# ---------------------------------------------------------------------------------------------
# WebSocket clients (picows): one listener class per server dialect


class OursWS(WSListener):
    """realtime_project: wait for `connected`, subscribe, ready on `subscribed`; answer heartbeats."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if self.client.ready.done():
            if b'"heartbeat"' in payload[:40]:
                STATS.heartbeats += 1
                transport.send(WSMsgType.TEXT, b'{"action":"pong"}')
            else:
                STATS.record(payload, now_us())
            return
        if payload.startswith(b'{"type":"connected"'):
            if self.client.channel:
                transport.send(WSMsgType.TEXT, self.client.subscribe_frame)
            else:
                self.client.ready.set_result(True)
        elif b'"subscribed"' in payload:
            self.client.ready.set_result(True)
        elif b'"error"' in payload[:20]:
            self.client.ready.set_exception(RuntimeError(payload[:200].decode()))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.client.lost()


class PlainWS(OursWS):
    """The `websockets` peer: ready on its `subscribed` hello; every other frame is a message."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if self.client.ready.done():
            STATS.record(payload, now_us())
        elif b"subscribed" in payload:
            self.client.ready.set_result(True)


class SocketIO(OursWS):
    """python-socketio over its WebSocket transport (Engine.IO 4 packets)."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        payload = frame.get_payload_as_bytes()
        if payload == b"2":
            transport.send(WSMsgType.TEXT, b"3")  # Engine.IO ping → pong
        elif self.client.ready.done():
            STATS.record(payload, now_us())
        elif payload.startswith(b"0{"):
            transport.send(WSMsgType.TEXT, b"40")  # Engine.IO open → Socket.IO connect
        elif payload.startswith(b"40"):
            transport.send(WSMsgType.TEXT, b'42["subscribe","%s"]' % self.client.channel.encode())
        elif payload.startswith(b'42["subscribed"'):
            self.client.ready.set_result(True)


WS_DIALECTS = {"ours": OursWS, "plain": PlainWS, "socketio": SocketIO}


# ---------------------------------------------------------------------------------------------
# SSE client: raw HTTP/1.1 over asyncio, markers found in the byte stream as it comes


class SSEProtocol(asyncio.Protocol):
    """One SSE stream; ready once the server's `stream-open` event arrives."""

    def __init__(self, client: Client, request: bytes) -> None:
        self.client = client
        self.request = request
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.client.ready.done():
            head = self.tail + data
            if head.startswith(b"HTTP/1.1 ") and not head.startswith(b"HTTP/1.1 200"):
                self.client.ready.set_exception(RuntimeError(head[:120].decode("latin-1")))
                return
            if b"stream-open" in head:
                self.client.ready.set_result(True)
                data = head[head.index(b"stream-open") :]
                self.tail = b""
            else:
                self.tail = head[-64:]
                return
        buffer = self.tail + data if self.tail else data
        end = STATS.record(buffer, now_us())
        self.tail = buffer[max(end, len(buffer) - 64) :]  # a marker TCP split across two reads

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost()


# ---------------------------------------------------------------------------------------------


class Client:
    """One connection of the worker, whatever its transport."""

    def __init__(self, worker: Worker, channel: str | None) -> None:
        self.worker = worker
        self.channel = channel
        self.subscribe_frame = json.dumps(
            {"action": "subscribe", "data": {"channel": self.channel}, "request_id": "s"}
        ).encode()
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closer: Any = None
        self.was_ready = False

    def lost(self) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection lost before ready"))
        elif self.was_ready and not self.worker.quitting:
            self.worker.dropped += 1

    async def open(self, url: str, timeout: float) -> None:
        options = self.worker.options
        local_addr = (options["source"], 0)
        if options["transport"] == "sse":
            host, port, request = _sse_request(url)
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(
                lambda: SSEProtocol(self, request), host, port, local_addr=local_addr
            )
            self.closer = transport.close
        else:
            listener_class = WS_DIALECTS[options["dialect"]]
            transport, _ = await ws_connect(
                lambda: listener_class(self), url, local_addr=local_addr, websocket_handshake_timeout=timeout
            )
            self.closer = transport.disconnect
        await asyncio.wait_for(asyncio.shield(self.ready), timeout)
        self.was_ready = True

    def close(self) -> None:
        if self.closer is not None:
            self.closer()


def _sse_request(url: str) -> tuple[str, int, bytes]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    request = f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nAccept: text/event-stream\r\n\r\n"
    return host, int(port or 80), request.encode()


class Worker:
    """Opens `count` clients with bounded concurrency, then serves commands."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.clients: list[Client] = []
        self.failed = 0
        self.failed_channels: set[str] = set()  # of clients that did not connect (per-client channels)
        self.dropped = 0
        self.errors: Counter[str] = Counter()
        self.quitting = False

    def urls(self) -> list[str]:
        urls = self.options["urls"]  # one per client, or one for all (cycled)
        return [urls[i % len(urls)] for i in range(self.options["count"])]

    def channels(self) -> list[str | None]:
        channels = self.options.get("channels")  # one per client, else the one `channel` for all
        return channels or [self.options.get("channel")] * self.options["count"]

    async def open_one(self, url: str, channel: str | None, gate: asyncio.Semaphore) -> float | None:
        async with gate:
            client = Client(self, channel)
            started = time.perf_counter()
            try:
                await client.open(url, self.options.get("timeout", 30.0))
            except Exception as error:  # any failure is counted and reported, never fatal
                self.failed += 1
                if self.options.get("channels"):
                    self.failed_channels.add(channel)
                self.errors[f"{type(error).__name__}: {str(error)[:80]}"] += 1
                client.close()
                return None
            self.clients.append(client)
            return time.perf_counter() - started

    async def open_all(self, all_at_once: bool = False) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.options["count"] if all_at_once else self.options.get("concurrency", 200))
        started = time.perf_counter()
        pairs = zip(self.urls(), self.channels(), strict=True)
        times = await asyncio.gather(*(self.open_one(url, channel, gate) for url, channel in pairs))
        elapsed = time.perf_counter() - started
        done = sorted(t for t in times if t is not None)
        return {
            "connected": len(self.clients),
            "failed": self.failed,
            "failed_channels": sorted(self.failed_channels),
            "errors": dict(self.errors.most_common(5)),
            "seconds": elapsed,
            "handshake_p50_ms": 1000 * done[len(done) // 2] if done else None,
            "handshake_p99_ms": 1000 * done[int(len(done) * 0.99)] if done else None,
        }

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            if line.startswith("reset"):
                STATS.reset(int(line.split()[1]) if " " in line else 0)
                self.dropped = 0
                emit({"ok": True})
            elif line == "count":
                emit({"frames": STATS.frames, "heartbeats": STATS.heartbeats, "last_us": STATS.last_us})
            elif line == "report":
                emit({**STATS.report(), "dropped": self.dropped, "open": len(self.clients)})
            elif line == "close":  # drop every connection at once (a reconnect storm follows)
                self.quitting = True
                for client in self.clients:
                    client.close()
                self.clients = []
                await asyncio.sleep(0.5)
                self.quitting = False
                emit({"ok": True})
            elif line in ("open", "storm"):  # (re)open the clients, `storm`: all at once
                self.failed = 0
                self.failed_channels.clear()
                self.errors.clear()
                emit(await self.open_all(all_at_once=line == "storm"))
            elif line == "quit":
                break
        self.quitting = True
        for client in self.clients:
            client.close()
        await asyncio.sleep(0.2)


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def main(options: dict[str, Any]) -> None:
    worker = Worker(options)
    if options.get("connect_first", True):
        emit(await worker.open_all())
    else:
        emit({"connected": 0})
    await worker.commands()


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        uvloop.run(main(json.load(file)))
