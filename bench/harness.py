"""The orchestrating side of a benchmark: worker processes, publishers, and the measured round."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import time
from typing import Any

import aiohttp
import orjson
from picows import WSListener, WSMsgType, ws_connect

from bench.servers import API_KEY, CLIENT_CPUS, PYTHON, ROOT, WORK, Server

PAYLOAD_BYTES = 100
BUCKET_US = 100


def marker_content(seq: int) -> str:
    """The published content: the marker the clients look for, padded to PAYLOAD_BYTES."""
    marker = f"~{seq}~{time.time_ns() // 1000}~"
    return marker + "x" * (PAYLOAD_BYTES - len(marker))


# ---------------------------------------------------------------------------------------------
# Load-generator workers


class Workers:
    """Several `bench.loadgen` processes pinned to the client CPUs, each on its own source address."""

    def __init__(self, specs: list[dict[str, Any]]) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen] = []
        for index, spec in enumerate(specs):
            path = WORK / f"worker-{os.getpid()}-{index}.json"
            path.write_text(json.dumps(spec))
            self.processes.append(
                subprocess.Popen(
                    ["taskset", "-c", CLIENT_CPUS, PYTHON, "-m", "bench.loadgen", str(path)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )

    def read(self) -> list[dict[str, Any]]:
        replies = []
        for process in self.processes:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("a load-generator worker died; run it by hand to see why")
            replies.append(json.loads(line))
        return replies

    def command(self, word: str) -> list[dict[str, Any]]:
        for process in self.processes:
            process.stdin.write(word + "\n")
            process.stdin.flush()
        return self.read()

    def close(self) -> None:
        for process in self.processes:
            try:
                process.stdin.write("quit\n")
                process.stdin.flush()
            except OSError:
                pass
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def worker_specs(
    count: int,
    urls: list[str],
    transport: str,
    dialect: str,
    channel: str | None,
    *,
    workers: int,
    tag: int,
    concurrency: int = 200,
    connect_first: bool = True,
    channels: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Split `count` clients (and their URLs, and their channels when each has its own) over
    `workers` processes and source addresses: client i goes to worker i % workers."""
    specs = []
    for index in range(workers):
        share = range(index, count, workers)
        specs.append(
            {
                "count": len(share),
                "urls": [urls[i % len(urls)] for i in share] if len(urls) > 1 else urls,
                "transport": transport,
                "dialect": dialect,
                "channel": channel,
                "channels": [channels[i] for i in share] if channels else None,
                "source": f"127.0.{index + 1}.{tag % 250 + 1}",
                "concurrency": concurrency,
                "connect_first": connect_first,
                "timeout": 30.0,
            }
        )
    return specs


def merge_connects(replies: list[dict[str, Any]]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for reply in replies:
        for key, value in reply.get("errors", {}).items():
            errors[key] = errors.get(key, 0) + value
    p99s = [r["handshake_p99_ms"] for r in replies if r.get("handshake_p99_ms") is not None]
    return {
        "connected": sum(r["connected"] for r in replies),
        "failed": sum(r.get("failed", 0) for r in replies),
        "failed_channels": sorted({c for r in replies for c in r.get("failed_channels", ())}),
        "seconds": max(r.get("seconds", 0) for r in replies),
        "handshake_p99_ms": max(p99s) if p99s else None,
        "errors": errors,
    }


# ---------------------------------------------------------------------------------------------
# Publishers


class _Sink(WSListener):
    def __init__(self, opened: asyncio.Future, ready_prefix: bytes | None) -> None:
        self.opened, self.ready_prefix = opened, ready_prefix

    def on_ws_frame(self, transport, frame) -> None:
        payload = frame.get_payload_as_bytes()
        if self.opened.done():
            if payload == b"2":
                transport.send(WSMsgType.TEXT, b"3")
            return
        if payload.startswith(b"0{") and self.ready_prefix == b"40":  # socket.io open → connect
            transport.send(WSMsgType.TEXT, b"40")
        elif self.ready_prefix is None or payload.startswith(self.ready_prefix):
            self.opened.set_result(True)


class Publisher:
    """Publishes marker payloads to one server, over HTTP or a WebSocket, in its dialect."""

    def __init__(self, kind: str, base: str, channel: str, *, persist: bool = False, publish_url: str = "") -> None:
        self.kind, self.base, self.channel, self.persist = kind, base, channel, persist
        self.publish_url = publish_url
        self.session: aiohttp.ClientSession | None = None
        self.ws = None
        self.errors = 0
        self.latencies: list[float] = []

    async def open(self) -> Publisher:
        if self.kind.startswith("http"):
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
            return self
        ws_base = self.base.replace("http://", "ws://")
        url, ready = {
            "ws-ours": (f"{ws_base}/ws/connect?api_key={API_KEY}", b'{"type":"connected"'),
            "ws-plain": (f"{ws_base}/pub", None),
            "ws-socketio": (f"{ws_base}/socket.io/?EIO=4&transport=websocket", b"40"),
        }[self.kind]
        opened = asyncio.get_running_loop().create_future()
        self.ws, _ = await ws_connect(lambda: _Sink(opened, ready), url)
        if ready is not None:
            await asyncio.wait_for(opened, 10)
        return self

    def send_to(self, channel: str, seq: int) -> None:
        """A chat client's publish on this WebSocket: to `channel`, with an id its ack carries back."""
        content = marker_content(seq)
        if self.kind == "ws-socketio":
            packet = ["publish", {"channel": channel, "content": content}]
            self.ws.send(WSMsgType.TEXT, b"42%d" % seq + orjson.dumps(packet))
        else:  # our dialect (our server and the `websockets` rooms peer)
            frame = {"action": "send_to_channel", "data": {"channel": channel, "content": content}, "request_id": seq}
            self.ws.send(WSMsgType.TEXT, orjson.dumps(frame))

    async def publish(self, seq: int) -> None:
        content = marker_content(seq)
        if self.ws is not None:
            if self.kind == "ws-ours":
                frame = {"action": "send_to_channel", "data": {"channel": self.channel, "content": content}}
                self.ws.send(WSMsgType.TEXT, orjson.dumps(frame))
            elif self.kind == "ws-plain":
                self.ws.send(WSMsgType.TEXT, content.encode())
            else:
                packet = ["publish", {"channel": self.channel, "content": content}]
                self.ws.send(WSMsgType.TEXT, b"42" + orjson.dumps(packet))
            return
        url, body, headers = self._http_request(content)
        started = time.perf_counter()
        try:
            async with self.session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status >= 300:
                    self.errors += 1
        except aiohttp.ClientError:
            self.errors += 1
        self.latencies.append(time.perf_counter() - started)

    def _http_request(self, content: str) -> tuple[str, bytes, dict[str, str]]:
        if self.kind == "http-ours":
            body = {"channel": self.channel, "message": {"type": "text", "content": content}, "persist": self.persist}
            headers = {"Content-Type": "application/json", "X-API-Key": API_KEY}
            return f"{self.base}/ws/send-to-channel", orjson.dumps(body), headers
        if self.kind == "http-eventstream":
            envelope = _envelope(self.channel, content)
            return f"{self.base}/publish?channel={self.channel}", envelope, {"Content-Type": "text/plain"}
        # http-pushpin: Pushpin's publish API takes the finished SSE event
        event = b"event: text\ndata: " + _envelope(self.channel, content) + b"\n\n"
        item = {"channel": self.channel, "formats": {"http-stream": {"content": event.decode()}}}
        return self.publish_url, orjson.dumps({"items": [item]}), {"Content-Type": "application/json"}

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.ws is not None:
            self.ws.disconnect()


def _envelope(channel: str, content: str) -> bytes:
    """An envelope of our shape and size, for peers whose servers do not build one."""
    import uuid

    return orjson.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": "text",
            "channel": channel,
            "content": content,
            "sender": None,
            "timestamp": time.time(),
            "offset": None,
        }
    )


async def publish_at_rate(publisher: Publisher, rate: float, seconds: float, first_seq: int) -> int:
    """Publish `rate`/s for `seconds` on a fixed schedule (HTTP requests overlap); returns the count."""
    loop = asyncio.get_running_loop()
    count = max(1, int(rate * seconds))
    start = loop.time()
    pending: set[asyncio.Task] = set()
    for index in range(count):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(publisher.publish(first_seq + index))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    return count


async def publish_chat(
    publishers: list[Publisher], channels: list[str], rate: float, seconds: float, first_seq: int
) -> int:
    """Publish `rate`/s for `seconds` on a fixed schedule, each message to a random channel, the
    publishing connections taking turns; returns the count."""
    loop = asyncio.get_running_loop()
    count = max(1, int(rate * seconds))
    pick = random.Random(first_seq).choice
    start, sent = loop.time(), 0
    while sent < count:
        due = min(count, int((loop.time() - start) * rate) + 1)
        while sent < due:
            publishers[sent % len(publishers)].send_to(pick(channels), first_seq + sent)
            sent += 1
        await asyncio.sleep(0.001)
    return count


async def publish_flat_out(publisher: Publisher, seconds: float, concurrency: int, first_seq: int) -> int:
    """Publish with `concurrency` requests in flight for `seconds`; returns the count."""
    deadline = time.perf_counter() + seconds
    counter = iter(range(first_seq, first_seq + 10**9))
    done = 0

    async def lane() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await publisher.publish(next(counter))
            done += 1

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return done


# ---------------------------------------------------------------------------------------------
# One measured round


def percentile(hist: dict[int, int], fraction: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = fraction * total, 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            return (bucket + 1) * BUCKET_US / 1000  # ms, upper edge of the bucket
    return None


def merge_reports(replies: list[dict[str, Any]]) -> tuple[int, dict[int, int], dict[int, list[int]], int, int]:
    hist: dict[int, int] = {}
    per_seq: dict[int, list[int]] = {}
    frames = dropped = last_us = 0
    for reply in replies:
        frames += reply["frames"]
        last_us = max(last_us, reply.get("last_us", 0))
        dropped += reply.get("dropped", 0)
        for bucket, count in reply["hist"].items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + count
        for seq, (count, worst) in reply["per_seq"].items():
            entry = per_seq.setdefault(int(seq), [0, 0])
            entry[0] += count
            entry[1] = max(entry[1], worst)
    return frames, hist, per_seq, dropped, last_us


async def measured_round(
    servers: list[Server],
    workers: Workers,
    subscribers: int,
    publish: Any,
    *,
    drain_seconds: float = 30.0,
    first_seq: int = 0,
) -> dict[str, Any]:
    """Reset the clients, publish (an awaitable returning the count), wait for every delivery
    (`subscribers` per publish; those not in `drain_seconds` after the last publish are lost),
    and measure server CPU over the whole window. Deliveries of sequence numbers under
    `first_seq` (late ones of an earlier round) are not counted."""
    workers.command(f"reset {first_seq}")
    load = os.getloadavg()[0]
    cpu0, wall0, start_us = sum(s.cpu() for s in servers), time.perf_counter(), time.time_ns() // 1000
    published = await publish
    publish_seconds = time.perf_counter() - wall0
    expected = published * subscribers
    deadline = time.perf_counter() + drain_seconds
    while True:
        await asyncio.sleep(0.5)
        if sum(r["frames"] for r in workers.command("count")) >= expected or time.perf_counter() > deadline:
            break
    frames, hist, per_seq, dropped, last_us = merge_reports(workers.command("report"))
    elapsed = time.perf_counter() - wall0
    cpu = sum(s.cpu() for s in servers) - cpu0
    worst = sorted(entry[1] for entry in per_seq.values())
    return {
        "published": published,
        "expected": expected,
        "delivered": frames,
        "delivered_messages": len(per_seq),  # published messages that reached at least one client
        "lost": max(0, expected - frames),
        "dropped_connections": dropped,
        "publish_seconds": publish_seconds,
        # the publishing time, or until the last delivery when the server fell behind
        "delivery_seconds": max(publish_seconds, (last_us - start_us) / 1e6),
        "delivered_per_s": frames / max(publish_seconds, (last_us - start_us) / 1e6),
        "server_cpu_s": cpu,
        "server_cpu_pct": 100 * cpu / elapsed,
        "cpu_us_per_delivery": 1e6 * cpu / frames if frames else None,
        "p50_ms": percentile(hist, 0.50),
        "p99_ms": percentile(hist, 0.99),
        "last_p99_ms": worst[math.ceil(0.99 * len(worst)) - 1] / 1000 if worst else None,
        "last_max_ms": worst[-1] / 1000 if worst else None,
        "loadavg": load,
    }


# ---------------------------------------------------------------------------------------------
# HTTP load


def http_request(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> str:
    """A raw keep-alive POST (latin-1 text, as `bench.httpload` takes it)."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return "\r\n".join(lines) + "\r\n\r\n" + body.decode("latin-1")


class HttpLoad:
    """One `bench.httpload` process on the client CPUs: keep-alive clients posting flat out."""

    def __init__(self, port: int, requests: list[str], *, tag: int, results: int | None = None) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        path = WORK / f"httpload-{os.getpid()}-{tag}.json"
        options = {"host": "127.0.0.1", "port": port, "source": f"127.0.9.{tag % 250 + 1}", "requests": requests}
        path.write_text(json.dumps({**options, "results": results}))
        self.process = subprocess.Popen(
            ["taskset", "-c", CLIENT_CPUS, PYTHON, "-m", "bench.httpload", str(path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()

    def _read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the HTTP load generator died; run it by hand to see why")
        return json.loads(line)

    def run(self, servers: list[Server], seconds: float) -> dict[str, Any]:
        """Post flat out for `seconds`; requests/s, per server CPU-second, latency, errors."""
        load = os.getloadavg()[0]
        cpu0 = sum(s.cpu() for s in servers)
        self.process.stdin.write(f"run {seconds}\n")
        self.process.stdin.flush()
        reply = self._read()
        cpu = sum(s.cpu() for s in servers) - cpu0
        hist = {int(bucket): count for bucket, count in reply["hist"].items()}
        return {
            "requests": reply["requests"],
            "requests_per_s": reply["requests"] / reply["seconds"],
            "requests_per_cpu_s": reply["requests"] / cpu if cpu else None,
            "server_cpu_pct": 100 * cpu / reply["seconds"],
            "p50_ms": percentile(hist, 0.5),
            "p99_ms": percentile(hist, 0.99),
            "errors": reply["errors"],
            "mismatched": reply["mismatched"],
            "statuses": reply["statuses"],
            "sample": reply["sample"],
            "loadavg": load,
        }

    def close(self) -> None:
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
