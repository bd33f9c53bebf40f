"""The benchmark scenarios: each starts its servers, drives clients and returns result rows."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from bench import servers as S
from bench.harness import (
    HttpLoad,
    Publisher,
    Workers,
    http_request,
    measured_round,
    merge_connects,
    percentile,
    publish_at_rate,
    publish_chat,
    publish_flat_out,
    worker_specs,
)

CHANNEL = f"bench-{int(time.time()) % 100000}"  # unique per run: other users share the Redis
SEQ = itertools.count(1)
TAG = itertools.count(1)  # picks a fresh source address per server start


@dataclass
class Target:
    """A server under test and how clients talk to it."""

    name: str
    start: Any  # () -> (list[Server], base_url, extra)
    ws_path: str | None = None
    sse_path: str | None = None
    dialect: str = "ours"
    publishers: tuple[str, ...] = ("http-ours",)
    concurrency: int = 200  # handshakes in flight per worker while connecting


def _ours(kind: str, env: dict[str, str] | None = None) -> Any:
    def start() -> tuple[list[S.Server], str, dict[str, Any]]:
        server = S.ours(kind, env).start()
        return [server], f"http://127.0.0.1:{server.port}", {}

    return start


def _single(factory: Any) -> Any:
    def start() -> tuple[list[S.Server], str, dict[str, Any]]:
        server = factory().start()
        return [server], f"http://127.0.0.1:{server.port}", {}

    return start


def _pushpin() -> tuple[list[S.Server], str, dict[str, Any]]:
    pushpin, origin, publish = S.peer_pushpin()
    origin.start()
    try:
        pushpin.start()
    except Exception:
        origin.stop()
        raise
    # the origin only answers the opening request: count Pushpin's processes alone
    return (
        [pushpin],
        f"http://127.0.0.1:{pushpin.port}",
        {"publish_url": f"http://127.0.0.1:{publish}/publish/", "also": [origin]},
    )


WS_TARGETS = {
    "ours-daphne": Target("ours-daphne", _ours("daphne"), ws_path="/ws/connect", publishers=("http-ours", "ws-ours")),
    "ours-uvicorn": Target("ours-uvicorn", _ours("uvicorn"), ws_path="/ws/connect", publishers=("ws-ours",)),
    "websockets": Target(
        "websockets", _single(S.peer_websockets), ws_path="/sub", dialect="plain", publishers=("ws-plain",)
    ),
    "socketio": Target(
        "socketio",
        _single(S.peer_socketio),
        ws_path="/socket.io/?EIO=4&transport=websocket",
        dialect="socketio",
        publishers=("ws-socketio",),
    ),
}
SSE_TARGETS = {
    "ours-daphne": Target("ours-daphne", _ours("daphne"), sse_path="/sse/connect?channels={channel}"),
    "ours-uvicorn": Target("ours-uvicorn", _ours("uvicorn"), sse_path="/sse/connect?channels={channel}"),
    "eventstream": Target(
        "eventstream",
        _single(S.peer_eventstream),
        sse_path="/events/?channel={channel}",
        publishers=("http-eventstream",),
    ),
    # Pushpin's origin side (zurl) answers 502 to some of 4 × 200 concurrent opens: open fewer at once
    "pushpin": Target(
        "pushpin", _pushpin, sse_path="/events/?channel={channel}", publishers=("http-pushpin",), concurrency=25
    ),
}


# A no-op subscribe and publish hook (README, "Hooks"): an async one, asked on the loop.
NO_OP_HOOKS = {
    "REALTIME_SUBSCRIBE_HOOK": "bench.hooks.no_objection",
    "REALTIME_PUBLISH_HOOK": "bench.hooks.no_objection",
}


def _chat_ours(redis: bool, hooks: bool = False) -> Any:
    def start() -> tuple[list[S.Server], str, dict[str, Any]]:
        # the default heartbeat (30 s, as the peers' pings): 20,000 idle sockets at 10 s would
        # cost a fifth of a core in every round
        env = {**S.ours_env(redis_url=S.REDIS_URL if redis else None), "WEBSOCKET_HEARTBEAT_INTERVAL": "30"}
        if hooks:
            env.update(NO_OP_HOOKS, PYTHONPATH=str(S.ROOT))  # bench.hooks, also under BENCH_OURS_ROOT
        return _ours("daphne", env)()

    return start


CHAT_TARGETS = {
    "ours-daphne": Target("ours-daphne", _chat_ours(redis=False), ws_path="/ws/connect", publishers=("ws-ours",)),
    "ours-daphne+redis": Target(
        "ours-daphne+redis",
        _chat_ours(redis=True),
        ws_path="/ws/connect",
        publishers=("ws-ours",),
    ),
    "ours-daphne+hooks": Target(
        "ours-daphne+hooks", _chat_ours(redis=False, hooks=True), ws_path="/ws/connect", publishers=("ws-ours",)
    ),
    "websockets": Target(
        "websockets", _single(S.peer_websockets_rooms), ws_path="/ws/connect", publishers=("ws-ours",)
    ),
    "socketio": Target(
        "socketio",
        _single(S.peer_socketio),
        ws_path="/socket.io/?EIO=4&transport=websocket",
        dialect="socketio",
        publishers=("ws-socketio",),
    ),
}


async def hook_cost() -> list[dict[str, Any]]:
    """`bench.hookcost` in a process of its own: µs per publish and subscribe decision by hook kind."""
    process = await asyncio.create_subprocess_exec(
        S.PYTHON, "-m", "bench.hookcost", cwd=str(S.ROOT), stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "DJANGO_DEBUG": "true", "PYTHONPATH": str(S.ROOT)},
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"bench.hookcost exited with {process.returncode}")
    return [{"scenario": "hooks", "server": case, **figures} for case, figures in json.loads(out).items()]


def workers_for(count: int) -> int:
    return max(1, min(4, (count + 999) // 1000))


def median_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the rounds' numeric figures; losses are summed (any loss must show)."""
    row: dict[str, Any] = {"rounds": len(rounds)}
    for key in rounds[0]:
        values = [r[key] for r in rounds if r[key] is not None]
        if key in ("lost", "dropped_connections"):
            row[key] = sum(values)
        elif values:
            row[key] = statistics.median(values)
        else:
            row[key] = None
    return row


def _profile(server: S.Server, seconds: float) -> subprocess.Popen:
    """py-spy over the first measured round (BENCH_PROFILE=dir): a flame graph per server/publisher.

    py-spy reads the stacks without stopping the process; some come out torn (a leaf with no
    callers, callers that do not call each other). BENCH_PROFILE_BLOCKING=1 stops it for each
    sample instead (whole stacks, a little slower); BENCH_PROFILE_STRACE=1 counts its system calls
    (`strace -c`) instead of sampling stacks.
    """
    S.PROFILE.mkdir(parents=True, exist_ok=True)
    output = S.PROFILE / f"{server.name}-{next(TAG)}.txt"
    argv = [
        "py-spy",
        "record",
        "-p",
        str(server.process.pid),
        "-d",
        str(int(seconds)),
        "-r",
        "200",
        "-f",
        "raw",
        "-o",
        str(output),
        "--nonblocking",
    ]
    if os.environ.get("BENCH_PROFILE_BLOCKING"):  # whole stacks: nonblocking reads tear some of them
        argv.pop()
    if os.environ.get("BENCH_PROFILE_STRACE"):  # system calls counted instead of sampled stacks
        argv = ["timeout", "-s", "INT", str(int(seconds)), "strace", "-c", "-f", "-p", str(server.process.pid)]
        argv += ["-o", str(output)]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.Popen(
        [str(S.Path(S.PYTHON).parent / argv[0]), *argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(servers: list[S.Server], extra: dict[str, Any]) -> None:
    for server in [*servers, *extra.get("also", [])]:
        server.stop()


# ---------------------------------------------------------------------------------------------


async def fanout(
    target: Target,
    transport: str,
    count: int,
    *,
    deliveries_per_s: float,
    seconds: float,
    rounds: int,
    hold: float = 0.0,
    publishers: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """N subscribers of one channel; a publisher at a fixed rate; deliveries, latency, CPU, RSS."""
    servers, base, extra = target.start()
    workers = None
    try:
        await asyncio.sleep(1.0)
        rss0 = sum(s.rss() for s in servers)
        path = (target.ws_path if transport == "ws" else target.sse_path).format(channel=CHANNEL)
        url = base.replace("http://", "ws://") + path if transport == "ws" else base + path
        workers = Workers(
            worker_specs(
                count,
                [url],
                transport,
                target.dialect,
                CHANNEL,
                workers=workers_for(count),
                tag=next(TAG),
                concurrency=target.concurrency,
            )
        )
        connect = merge_connects(workers.read())
        if not connect["connected"]:
            raise RuntimeError(f"{target.name}: no client connected: {connect['errors']}")
        idle = {}
        if hold:
            cpu0 = sum(s.cpu() for s in servers)
            await asyncio.sleep(hold)
            idle["idle_cpu_pct"] = 100 * (sum(s.cpu() for s in servers) - cpu0) / hold
        idle["rss_kb_per_conn"] = (sum(s.rss() for s in servers) - rss0) / 1024 / max(1, connect["connected"])
        rows = []
        rate = deliveries_per_s / max(1, connect["connected"])
        for kind in publishers or target.publishers:
            publisher = await Publisher(kind, base, CHANNEL, publish_url=extra.get("publish_url", "")).open()
            profiler = _profile(servers[0], seconds) if S.PROFILE else None
            try:
                results = []
                for _ in range(rounds):
                    first = next(SEQ)
                    for _ in range(int(rate * seconds) + 1):
                        next(SEQ)
                    publish = publish_at_rate(publisher, rate, seconds, first)
                    results.append(await measured_round(servers, workers, connect["connected"], publish))
            finally:
                await publisher.close()
                if profiler is not None:
                    profiler.wait()
            rows.append(
                {
                    "scenario": f"{transport}-fanout",
                    "server": target.name,
                    "n": count,
                    "publisher": kind,
                    "rate": rate,
                    "offered_per_s": deliveries_per_s,
                    "connected": connect["connected"],
                    "connect_failed": connect["failed"],
                    "connect_s": connect["seconds"],
                    **idle,
                    **median_row(results),
                }
            )
        return rows
    finally:
        if workers is not None:
            workers.close()
        _stop(servers, extra)


async def connect_storm(kind: str, count: int, rounds: int) -> list[dict[str, Any]]:
    """Handshakes/s with a JWT and a subscribe, then every client dropped and reconnected at once."""
    env = S.ours_env()
    server = S.ours(kind, env).start()
    base = f"ws://127.0.0.1:{server.port}/ws/connect?token="
    tokens = _tokens(count, env)
    urls = [base + token for token in tokens]
    workers_n = 4
    workers = Workers(
        worker_specs(
            count, urls, "ws", "ours", CHANNEL, workers=workers_n, tag=next(TAG), concurrency=25, connect_first=False
        )
    )
    try:
        workers.read()
        results = []
        for _ in range(rounds):
            cpu0 = server.cpu()
            paced = merge_connects(workers.command("open"))  # 4 × 25 handshakes in flight
            paced_cpu = server.cpu() - cpu0
            workers.command("close")
            await asyncio.sleep(2.0)
            storm = merge_connects(workers.command("storm"))  # every client at once
            workers.command("close")
            await asyncio.sleep(2.0)
            results.append(
                {
                    "handshakes_per_s": paced["connected"] / paced["seconds"],
                    "cpu_ms_per_handshake": 1000 * paced_cpu / max(1, paced["connected"]),
                    "paced_failed": paced["failed"],
                    "storm_seconds": storm["seconds"],
                    "storm_failed": storm["failed"],
                    "storm_p99_ms": storm["handshake_p99_ms"],
                    "errors": json.dumps(storm["errors"] or paced["errors"])[:200],
                }
            )
        row = median_row([{k: v for k, v in r.items() if k != "errors"} for r in results])
        row["errors"] = results[-1]["errors"]
        return [{"scenario": "connect", "server": f"ours-{kind}", "n": count, **row}]
    finally:
        workers.close()
        server.stop()


def _tokens(count: int, env: dict[str, str]) -> list[str]:
    code = (
        "import django, json; django.setup(); from streaming.auth import authenticator; "
        f"print(json.dumps([authenticator.create_access_token({{'sub': f'bench{{i}}'}}) for i in range({count})]))"
    )
    output = subprocess.run(
        [S.PYTHON, "-c", code], cwd=S.OURS_ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(output.stdout)


async def cluster(count: int, *, deliveries_per_s: float, seconds: float, rounds: int) -> list[dict[str, Any]]:
    """Subscribers split over 2 daphne processes on Redis; vs 1 process on Redis (same load)."""
    rows = []
    for processes in (1, 2):
        env = S.ours_env(redis_url=S.REDIS_URL)
        started = [S.ours("daphne", env, name=f"ours-cluster{index}").start() for index in range(processes)]
        workers = None
        try:
            urls = [f"ws://127.0.0.1:{s.port}/ws/connect" for s in started]
            specs = worker_specs(count, urls[:1], "ws", "ours", CHANNEL, workers=4, tag=next(TAG))
            for index, spec in enumerate(specs):  # whole workers per process: split by source address
                spec["urls"] = [urls[index * len(urls) // len(specs)]]
            workers = Workers(specs)
            connect = merge_connects(workers.read())
            rate = deliveries_per_s / max(1, connect["connected"])
            publisher = await Publisher("http-ours", f"http://127.0.0.1:{started[0].port}", CHANNEL).open()
            results = []
            try:
                for _ in range(rounds):
                    first = next(SEQ)
                    for _ in range(int(rate * seconds) + 1):
                        next(SEQ)
                    publish = publish_at_rate(publisher, rate, seconds, first)
                    results.append(await measured_round(started, workers, connect["connected"], publish))
            finally:
                await publisher.close()
            rows.append(
                {
                    "scenario": "cluster",
                    "server": f"ours-daphne ×{processes} + Redis",
                    "n": count,
                    "publisher": "http-ours",
                    "rate": rate,
                    "offered_per_s": deliveries_per_s,
                    "connected": connect["connected"],
                    "connect_failed": connect["failed"],
                    **median_row(results),
                }
            )
        finally:
            if workers is not None:
                workers.close()
            for server in started:
                server.stop()
    return rows


async def persist(
    database: str, *, subscribers: int, seconds: float, rounds: int, concurrency: int = 16
) -> list[dict[str, Any]]:
    """Publishes/s with persist: true (one history row each, delivered after commit)."""
    if database == "postgresql":
        S.reset_postgres()
        env = S.ours_env(database_url=S.PG_URL)
    else:
        env = S.ours_env(database_url=f"sqlite:///{S.WORK}/persist-{int(time.time())}.sqlite3")
    S.migrate(env)
    server = S.ours("daphne", env).start()
    url = f"ws://127.0.0.1:{server.port}/ws/connect"
    workers = Workers(worker_specs(subscribers, [url], "ws", "ours", CHANNEL, workers=1, tag=next(TAG)))
    try:
        connect = merge_connects(workers.read())
        publisher = await Publisher("http-ours", f"http://127.0.0.1:{server.port}", CHANNEL, persist=True).open()
        results = []
        try:
            for _ in range(rounds):
                publisher.latencies.clear()
                publisher.errors = 0
                first = next(SEQ)
                for _ in range(200_000):
                    next(SEQ)
                publish = publish_flat_out(publisher, seconds, concurrency, first)
                result = await measured_round([server], workers, connect["connected"], publish)
                latencies: dict[int, int] = {}  # in 100 µs buckets, as `percentile` reads them
                for latency in publisher.latencies:
                    bucket = int(latency * 1e4)
                    latencies[bucket] = latencies.get(bucket, 0) + 1
                result["publishes_per_s"] = result["published"] / result["publish_seconds"]
                result["request_p50_ms"] = percentile(latencies, 0.5)
                result["request_p99_ms"] = percentile(latencies, 0.99)
                result["publish_errors"] = publisher.errors
                results.append(result)
        finally:
            await publisher.close()
        return [
            {
                "scenario": "persist",
                "server": "ours-daphne",
                "database": database,
                "n": connect["connected"],
                "publisher": f"http-ours ×{concurrency}",
                **median_row(results),
            }
        ]
    finally:
        workers.close()
        server.stop()


# ---------------------------------------------------------------------------------------------
# Many small channels, HTTP publishing, batches, idle connections


FILES_SPARE = 256  # a server's open files besides its clients: listener, publishers, database, logs


def _reserve(count: int) -> int:
    """The first of `count` fresh sequence numbers."""
    first = next(SEQ)
    for _ in range(count):
        next(SEQ)
    return first


async def _settle(servers: list[S.Server], limit: float = 15.0) -> float:
    """Wait (up to `limit` s) until the servers use under half a core: a backlog of the last round
    must not be billed to the next one. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() < started + limit:
        cpu0 = sum(s.cpu() for s in servers)
        await asyncio.sleep(1.0)
        if sum(s.cpu() for s in servers) - cpu0 < 0.5:
            break
    return time.monotonic() - started


async def chat(
    target: Target,
    channels: int,
    *,
    rates: list[float],
    seconds: float,
    rounds: int,
    publishers: int = 8,
    drain: float = 1.5,
) -> list[dict[str, Any]]:
    """`channels` channels of 2 WebSocket subscribers each; `publishers` WebSocket client connections
    publish to random channels at each offered rate. Per rate: publishes handled/s, server CPU per
    publish and per delivery, lost (deliveries not in `drain` s after the last publish) and the
    latency until the later of a message's two subscribers had it."""
    # every subscriber is a socket of the one server process: stay inside its limit of open files
    fits = (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FILES_SPARE) // 2
    if channels > fits:
        print(f"   {channels:,} channels need more open files than allowed here: {fits:,} channels", flush=True)
    used = min(channels, fits)
    servers, base, extra = target.start()
    workers = None
    opened: list[Publisher] = []
    try:
        await asyncio.sleep(1.0)
        names = [f"{CHANNEL}-chat{channels}-{index}" for index in range(used)]
        url = base.replace("http://", "ws://") + target.ws_path
        count = 2 * used  # client i subscribes to channel i // 2: the two land on different workers
        specs = worker_specs(
            count,
            [url],
            "ws",
            target.dialect,
            None,
            workers=4,
            tag=next(TAG),
            concurrency=target.concurrency,
            channels=[names[index // 2] for index in range(count)],
        )
        workers = Workers(specs)
        connect = merge_connects(workers.read())
        broken = set(connect["failed_channels"])
        usable = [name for name in names if name not in broken]  # both subscribers connected
        if not usable:
            raise RuntimeError(f"{target.name}: no channel with both subscribers: {connect['errors']}")
        for _ in range(publishers):
            opened.append(await Publisher(target.publishers[0], base, "").open())
        await _settle(servers, limit=30.0)  # the connects' aftermath (registry writes) is not a publish's cost
        rows = []
        base_row = {
            "scenario": "chat",
            "server": target.name,
            "n": channels,
            "publisher": f"{target.publishers[0]} ×{publishers}",
            "connected": connect["connected"],
            "connect_failed": connect["failed"],
            "connect_s": connect["seconds"],
            "channels_used": len(usable),
        }
        saturated_at = None  # a rate the server handled less than half of: higher ones are skipped
        for rate in sorted(rates):
            if saturated_at is not None:
                rows.append({**base_row, "offered_per_s": rate, "skipped": f"saturated at {saturated_at:,.0f}/s"})
                continue
            results = []
            for _ in range(rounds):
                if rows or results:
                    await _settle(servers)
                first = _reserve(int(rate * seconds) + 1)
                publish = publish_chat(opened, usable, rate, seconds, first)
                profiler = _profile(servers[0], seconds) if S.PROFILE and not results else None
                result = await measured_round(servers, workers, 2, publish, drain_seconds=drain, first_seq=first)
                if profiler is not None:
                    profiler.wait()
                # a publish counts as handled once it reached a subscriber: a server that falls
                # behind is billed for what it did, not for what was offered
                handled = result["delivered_messages"]
                result["publishes_per_s"] = handled / result["delivery_seconds"]
                result["cpu_us_per_publish"] = 1e6 * result["server_cpu_s"] / handled if handled else None
                results.append(result)
            rows.append({**base_row, "offered_per_s": rate, **median_row(results)})
            if rows[-1]["publishes_per_s"] < rate / 2:
                saturated_at = rate
        return rows
    finally:
        for publisher in opened:
            await publisher.close()
        if workers is not None:
            workers.close()
        _stop(servers, extra)


HTTP_CASES = {  # name → (server, database, persist)
    "ours": ("ours", "sqlite", False),
    "ours persisted, SQLite": ("ours", "sqlite", True),
    "ours persisted, PostgreSQL": ("ours", "postgresql", True),
    "floor A: Django async view": ("floor-django", None, False),
    "floor B: bare ASGI": ("floor-asgi", None, False),
}


def _http_server(kind: str, database: str | None) -> S.Server:
    if kind == "floor-django":
        return S.floor_django().start()
    if kind == "floor-asgi":
        return S.floor_asgi().start()
    if database == "postgresql":
        S.reset_postgres()
        env = S.ours_env(database_url=S.PG_URL)
    else:
        env = S.ours_env(database_url=f"sqlite:///{S.WORK}/http-{int(time.time() * 1000)}.sqlite3")
    S.migrate(env)
    return S.ours("daphne", env).start()


def _content(index: int) -> dict[str, Any]:
    """About 100 bytes of JSON content."""
    return {"text": f"message {index:06d} " + "x" * 60, "n": index, "ok": True}


async def http_publish(case: str, *, clients: int, seconds: float, rounds: int) -> list[dict[str, Any]]:
    """`clients` keep-alive clients POST `/ws/send-to-channel` flat out: requests/s, requests per
    server CPU-second, latency, errors."""
    kind, database, persist = HTTP_CASES[case]
    server = _http_server(kind, database)
    load = None
    try:
        requests = []
        for index in range(clients):
            body = {"channel": f"hp-{index}", "message": {"content": _content(index)}, "persist": persist}
            headers = {"X-API-Key": S.API_KEY}
            requests.append(http_request(server.port, "/ws/send-to-channel", json.dumps(body).encode(), headers))
        load = HttpLoad(server.port, requests, tag=next(TAG))
        load.run([server], 1.0)  # warm-up: imports, caches, connection pools
        results = [load.run([server], seconds) for _ in range(rounds)]
        keep = ("statuses", "sample")
        row = median_row([{k: v for k, v in r.items() if k not in keep} for r in results])
        row["errors"] = sum(r["errors"] for r in results)
        return [
            {
                "scenario": "http-publish",
                "server": case,
                "database": database,
                "persist": persist,
                "n": clients,
                "statuses": results[-1]["statuses"],
                "sample": results[-1]["sample"],
                **row,
            }
        ]
    finally:
        if load is not None:
            load.close()
        server.stop()


BATCH_CASES = {  # name → (database, persist)
    "not persisted": ("sqlite", False),
    "persisted, SQLite": ("sqlite", True),
    "persisted, PostgreSQL": ("postgresql", True),
}
BATCH_PATH = "/api/publish/batch/"


def _probe(port: int, request: str) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    with socket.create_connection(("127.0.0.1", port), 10) as connection:
        connection.sendall(request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1).encode("latin-1"))
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head[9:12]), body


async def batch(case: str, *, size: int, clients: int, seconds: float, rounds: int) -> list[dict[str, Any]]:
    """`clients` keep-alive clients POST batches of `size` messages (each to its own channel) flat
    out: messages/s and messages per server CPU-second. Answers 404 while the endpoint is missing."""
    database, persist = BATCH_CASES[case]
    server = _http_server("ours", database)
    load = None
    base = {"scenario": "batch", "server": case, "database": database, "persist": persist, "n": size}
    try:
        requests = []
        for client in range(clients):
            items = [
                {"channel": f"bt-{client}-{index}", "message": {"content": _content(index)}, "persist": persist}
                for index in range(size)
            ]
            body = json.dumps({"messages": items}).encode()
            requests.append(http_request(server.port, BATCH_PATH, body, {"X-API-Key": S.API_KEY}))
        status, body = _probe(server.port, requests[0])
        if status == 404:
            return [{**base, "missing": f"endpoint missing ({status})"}]
        if status != 202:
            raise RuntimeError(f"{BATCH_PATH} answered {status}: {body[:200]!r}")
        load = HttpLoad(server.port, requests, tag=next(TAG), results=size)
        load.run([server], 1.0)
        results = []
        for _ in range(rounds):
            result = load.run([server], seconds)
            result["messages_per_s"] = size * result["requests_per_s"]
            cpu_s = result["requests_per_cpu_s"]
            result["messages_per_cpu_s"] = size * cpu_s if cpu_s else None
            results.append(result)
        keep = ("statuses", "sample")
        row = median_row([{k: v for k, v in r.items() if k not in keep} for r in results])
        row["errors"] = sum(r["errors"] for r in results)
        row["mismatched"] = sum(r["mismatched"] for r in results)
        return [{**base, "clients": clients, "sample": results[-1]["sample"], **row}]
    finally:
        if load is not None:
            load.close()
        server.stop()


async def idle(count: int, *, seconds: float, heartbeat: int = 30) -> list[dict[str, Any]]:
    """`count` idle WebSockets (subscribed, answering heartbeats with `pong`) for `seconds`:
    the server's CPU as a share of one core."""
    env = {**S.ours_env(), "WEBSOCKET_HEARTBEAT_INTERVAL": str(heartbeat)}
    server = S.ours("daphne", env).start()
    url = f"ws://127.0.0.1:{server.port}/ws/connect"
    workers = None
    try:
        rss0 = server.rss()
        workers = Workers(worker_specs(count, [url], "ws", "ours", CHANNEL, workers=workers_for(count), tag=next(TAG)))
        connect = merge_connects(workers.read())
        await asyncio.sleep(5.0)  # the connects' registry writes and collections done
        workers.command("reset")
        profiler = _profile(server, seconds) if S.PROFILE else None
        cpu0, wall0 = server.cpu(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = server.cpu() - cpu0, time.perf_counter() - wall0
        if profiler is not None:
            profiler.wait()
        replies = workers.command("count")
        report = workers.command("report")
        return [
            {
                "scenario": "idle",
                "server": "ours-daphne",
                "n": count,
                "heartbeat_s": heartbeat,
                "seconds": wall,
                "connected": connect["connected"],
                "connect_failed": connect["failed"],
                "connect_s": connect["seconds"],
                "idle_cpu_pct": 100 * cpu / wall,
                "heartbeats": sum(r["heartbeats"] for r in replies),
                "dropped_connections": sum(r["dropped"] for r in report),
                "rss_kb_per_conn": (server.rss() - rss0) / 1024 / max(1, connect["connected"]),
            }
        ]
    finally:
        if workers is not None:
            workers.close()
        server.stop()
