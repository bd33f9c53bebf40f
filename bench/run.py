"""`make bench`: run the scenarios, print the tables and write bench/RESULTS.md.

    python -m bench.run                      # everything (~50 min), 3 rounds per fan-out and chat figure
    python -m bench.run --only ws-fanout --sizes 1000 --rounds 1 --output /tmp/r.md
    python -m bench.run --only chat --chat-channels 2000 --chat-rates 1000 --seconds 5 --output /tmp/r.md

The servers run on CPU 0 (BENCH_SERVER_CPUS), the load generator and publisher on CPU 1
(BENCH_CLIENT_CPUS). Every figure is the median of measured rounds on one server start (--rounds;
--chat-rounds and --http-rounds for the chat, http-publish and batch scenarios);
CPU is read from /proc/<pid>/stat (utime + stime of every server process), so "µs CPU per
delivery" stays meaningful when the machine is busy, where wall-clock rates would not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import uvloop

from bench import scenarios as sc
from bench import servers as S

SCENARIOS = (
    "ws-fanout", "sse-fanout", "connect", "cluster", "persist", "chat", "hooks", "http-publish", "batch", "idle",
)  # fmt: skip
HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma list of " + ", ".join(SCENARIOS))
    parser.add_argument("--servers", default="", help="comma list of server names to keep (default: all)")
    parser.add_argument("--sizes", default="1000,10000", help="subscriber counts of the fan-out scenarios")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per figure (median)")
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing time per round")
    parser.add_argument("--deliveries", type=float, default=20_000, help="offered deliveries/s in fan-outs")
    parser.add_argument("--connect-clients", type=int, default=5000)
    parser.add_argument("--chat-channels", default="2000,10000", help="channel counts of the chat scenario")
    parser.add_argument("--chat-rates", default="1000,1500,5000", help="offered publishes/s of the chat scenario")
    parser.add_argument("--chat-rounds", type=int, default=3, help="measured rounds per chat figure")
    parser.add_argument("--chat-publishers", type=int, default=8, help="publishing WebSocket connections")
    parser.add_argument("--http-clients", type=int, default=32, help="keep-alive clients of http-publish")
    parser.add_argument("--http-rounds", type=int, default=2, help="measured rounds of http-publish and batch")
    parser.add_argument("--batch-size", type=int, default=100, help="messages per batch request")
    parser.add_argument("--batch-clients", type=int, default=4, help="keep-alive clients of the batch scenario")
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="measured idle window")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    return parser.parse_args(argv)


async def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    only = set(args.only.split(","))
    keep = set(filter(None, args.servers.split(",")))
    sizes = [int(n) for n in args.sizes.split(",")]
    common = {"deliveries_per_s": args.deliveries, "seconds": args.seconds, "rounds": args.rounds}
    rows: list[dict[str, Any]] = []

    async def attempt(label: str, job: Any) -> None:
        print(f"-- {label} (load {os.getloadavg()[0]:.2f})", flush=True)
        try:
            found = await job
        except Exception as error:  # a peer that fails must not cost the other figures
            print(f"   FAILED: {error!r}", flush=True)
            rows.append({"scenario": label.split()[0], "server": label, "error": repr(error)[:200]})
            return
        for row in found:
            print("   " + _brief(row), flush=True)
        rows.extend(found)

    for transport, targets in (("ws", sc.WS_TARGETS), ("sse", sc.SSE_TARGETS)):
        if f"{transport}-fanout" not in only:
            continue
        for count in sizes:
            for name, target in targets.items():
                if keep and name not in keep:
                    continue
                if name == "pushpin" and not S.pushpin_available():
                    continue
                hold = 12.0 if count >= 10_000 else 2.0  # an idle window with heartbeats (every 10 s)
                await attempt(
                    f"{transport}-fanout {name} n={count}", sc.fanout(target, transport, count, hold=hold, **common)
                )
    if "connect" in only:
        for kind in ("daphne", "uvicorn"):
            if not keep or f"ours-{kind}" in keep:
                await attempt(f"connect ours-{kind}", sc.connect_storm(kind, args.connect_clients, args.rounds))
    if "cluster" in only:
        await attempt("cluster", sc.cluster(max(sizes), **common))
    if "persist" in only:
        for database in ("sqlite", "postgresql"):
            await attempt(
                f"persist {database}", sc.persist(database, subscribers=100, seconds=args.seconds, rounds=args.rounds)
            )
    if "chat" in only:
        rates = [int(r) if r.strip().isdigit() else float(r) for r in args.chat_rates.split(",")]
        for channels in (int(n) for n in args.chat_channels.split(",")):
            for name, target in sc.CHAT_TARGETS.items():
                if keep and name not in keep:
                    continue
                job = sc.chat(
                    target,
                    channels,
                    rates=rates,
                    seconds=args.seconds,
                    rounds=args.chat_rounds,
                    publishers=args.chat_publishers,
                )
                await attempt(f"chat {name} channels={channels}", job)
    if "hooks" in only:
        await attempt("hooks in process", sc.hook_cost())
    if "http-publish" in only:
        for case in sc.HTTP_CASES:
            job = sc.http_publish(case, clients=args.http_clients, seconds=args.seconds, rounds=args.http_rounds)
            await attempt(f"http-publish {case}", job)
    if "batch" in only:
        for case, (database, persist) in sc.BATCH_CASES.items():
            missing = next((r for r in rows if r.get("scenario") == "batch" and r.get("missing")), None)
            if missing is not None:  # no need to start the other cases
                rows.append({**missing, "server": case, "database": database, "persist": persist})
                print(f"-- batch {case}\n   {missing['missing']}", flush=True)
                continue
            job = sc.batch(
                case, size=args.batch_size, clients=args.batch_clients, seconds=args.seconds, rounds=args.http_rounds
            )
            await attempt(f"batch {case}", job)
    if "idle" in only:
        await attempt("idle ours-daphne", sc.idle(args.idle_connections, seconds=args.idle_seconds))
    return rows


def _brief(row: dict[str, Any]) -> str:
    keys = (
        "server",
        "n",
        "connected",
        "connect_failed",
        "publisher",
        "delivered_per_s",
        "cpu_us_per_delivery",
        "p50_ms",
        "p99_ms",
        "last_p99_ms",
        "lost",
        "rss_kb_per_conn",
        "handshakes_per_s",
        "storm_seconds",
        "storm_failed",
        "publishes_per_s",
        "offered_per_s",
        "cpu_us_per_publish",
        "requests_per_s",
        "requests_per_cpu_s",
        "messages_per_s",
        "messages_per_cpu_s",
        "errors",
        "missing",
        "skipped",
        "idle_cpu_pct",
        "heartbeats",
        "database",
    )
    return " ".join(f"{k}={_fmt(row[k])}" for k in keys if k in row)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Report


def table(headers: list[str], lines: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_fmt(cell) for cell in line) + " |" for line in lines]
    return "\n".join(out)


def per_core(row: dict[str, Any]) -> float | None:
    us = row.get("cpu_us_per_delivery")
    return 1e6 / us if us else None


def fanout_table(rows: list[dict[str, Any]], scenario: str) -> str:
    found = [r for r in rows if r.get("scenario") == scenario and "error" not in r]
    headers = [
        "server",
        "subscribers",
        "publisher",
        "delivered/s",
        "lost",
        "server CPU %",
        "µs CPU/delivery",
        "deliveries/s per core",
        "p50 ms",
        "p99 ms",
        "last-subscriber p99 ms",
        "RSS KB/conn",
        "idle CPU %",
    ]
    lines = [
        [
            r["server"],
            r["n"],
            r["publisher"],
            r["delivered_per_s"],
            r["lost"],
            r["server_cpu_pct"],
            r["cpu_us_per_delivery"],
            per_core(r),
            r["p50_ms"],
            r["p99_ms"],
            r["last_p99_ms"],
            r.get("rss_kb_per_conn"),
            r.get("idle_cpu_pct"),
        ]
        for r in found
    ]
    return table(headers, lines)


def ratios(rows: list[dict[str, Any]], scenario: str, ours: dict[str, str]) -> str:
    """Our deliveries/s per core as a ratio to each peer's, per subscriber count."""
    found = [r for r in rows if r.get("scenario") == scenario and r.get("cpu_us_per_delivery")]
    lines = []
    for count in sorted({r["n"] for r in found}):
        at = [r for r in found if r["n"] == count]
        for server, publisher in ours.items():
            mine = next((r for r in at if r["server"] == server and r["publisher"] == publisher), None)
            if mine is None:
                continue
            for peer in at:
                if peer["server"].startswith("ours"):
                    continue
                ratio = peer["cpu_us_per_delivery"] / mine["cpu_us_per_delivery"]
                lines.append(
                    [
                        count,
                        f"{server} ({publisher})",
                        peer["server"],
                        f"{ratio:.2f}×",
                        mine["last_p99_ms"],
                        peer["last_p99_ms"],
                    ]
                )
    headers = [
        "subscribers",
        "ours",
        "peer",
        "ours ÷ peer (deliveries/s per core)",
        "ours last p99 ms",
        "peer last p99 ms",
    ]
    return table(headers, lines)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, command: str, started: float) -> str:
    parts = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} "
        f"in {(time.time() - started) / 60:.0f} min. Do not edit by hand: `make bench` rewrites it "
        "(the optimisation log at the end is copied from `bench/OPTIMISATIONS.md`).",
        "",
        "## Machine and versions",
        "",
        machine(),
        "",
        "## Method",
        "",
        METHOD.format(**vars(args)),
        "",
    ]
    errors = [r for r in rows if "error" in r]
    if "ws-fanout" in args.only:
        parts += [
            "## WebSocket fan-out",
            "",
            fanout_table(rows, "ws-fanout"),
            "",
            "Ratios (ours ÷ peer > 1 means we deliver more per server core):",
            "",
            ratios(rows, "ws-fanout", {"ours-daphne": "ws-ours", "ours-uvicorn": "ws-ours"}),
            "",
        ]
    if "sse-fanout" in args.only:
        parts += [
            "## SSE fan-out",
            "",
            fanout_table(rows, "sse-fanout"),
            "",
            "Ratios:",
            "",
            ratios(rows, "sse-fanout", {"ours-daphne": "http-ours", "ours-uvicorn": "http-ours"}),
            "",
        ]
    idle = []  # one row per server and transport at 10,000: the idle window precedes its fan-out rounds
    for r in rows:
        fanout = r.get("scenario", "").endswith("fanout") and r.get("n", 0) >= 10_000 and "error" not in r
        if fanout and not any(o["server"] == r["server"] and o["scenario"] == r["scenario"] for o in idle):
            idle.append(r)
    if idle:
        parts += [
            "## Idle connections (10,000, heartbeats every 10 s)",
            "",
            "Measured after connecting and a 12 s idle window, before the fan-out rounds.",
            "",
            table(
                ["transport", "server", "connected", "connect s", "RSS KB/conn", "idle CPU %"],
                [
                    [
                        r["scenario"].split("-")[0],
                        r["server"],
                        r["connected"],
                        r["connect_s"],
                        r["rss_kb_per_conn"],
                        r["idle_cpu_pct"],
                    ]
                    for r in idle
                ],
            ),
            "",
        ]
    connect = [r for r in rows if r.get("scenario") == "connect" and "error" not in r]
    if connect:
        parts += [
            "## Connect (JWT in the query string + subscribe)",
            "",
            table(
                [
                    "server",
                    "clients",
                    "handshakes/s (100 in flight)",
                    "CPU ms/handshake",
                    "failed",
                    "storm: all reconnect at once, s",
                    "storm failed",
                    "storm p99 ms",
                ],
                [
                    [
                        r["server"],
                        r["n"],
                        r["handshakes_per_s"],
                        r["cpu_ms_per_handshake"],
                        r["paced_failed"],
                        r["storm_seconds"],
                        r["storm_failed"],
                        r["storm_p99_ms"],
                    ]
                    for r in connect
                ],
            ),
            "",
        ]
    cluster = [r for r in rows if r.get("scenario") == "cluster" and "error" not in r]
    if cluster:
        parts += [
            "## Cluster (Redis pub/sub bus, subscribers split over the processes)",
            "",
            table(
                [
                    "server",
                    "subscribers",
                    "delivered/s",
                    "lost",
                    "µs CPU/delivery (all processes)",
                    "p50 ms",
                    "p99 ms",
                    "last p99 ms",
                ],
                [
                    [
                        r["server"],
                        r["connected"],
                        r["delivered_per_s"],
                        r["lost"],
                        r["cpu_us_per_delivery"],
                        r["p50_ms"],
                        r["p99_ms"],
                        r["last_p99_ms"],
                    ]
                    for r in cluster
                ],
            ),
            "",
        ]
    persist = [r for r in rows if r.get("scenario") == "persist" and "error" not in r]
    if persist:
        parts += [
            "## Persist (`persist: true`, 16 HTTP publishers flat out, 100 WS subscribers)",
            "",
            table(
                [
                    "database",
                    "publishes/s",
                    "request p50 ms",
                    "request p99 ms",
                    "publish errors",
                    "deliveries lost",
                    "server CPU %",
                ],
                [
                    [
                        r["database"],
                        r["publishes_per_s"],
                        r["request_p50_ms"],
                        r["request_p99_ms"],
                        r["publish_errors"],
                        r["lost"],
                        r["server_cpu_pct"],
                    ]
                    for r in persist
                ],
            ),
            "",
        ]
    parts += chat_section(rows) + hooks_section(rows) + http_section(rows) + batch_section(rows) + idle_section(rows)
    if errors:
        parts += ["## Failed runs", "", table(["run", "error"], [[r["server"], r["error"]] for r in errors]), ""]
    log = HERE / "OPTIMISATIONS.md"
    if log.exists():
        parts += [log.read_text().strip(), ""]
    return "\n".join(parts)


def _found(rows: list[dict[str, Any]], scenario: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("scenario") == scenario and "error" not in r]


def chat_section(rows: list[dict[str, Any]]) -> list[str]:
    found = _found(rows, "chat")
    if not found:
        return []
    lines = [
        [
            r["server"],
            r["n"] if r["channels_used"] == r["n"] else f"{r['channels_used']:,} of {r['n']:,}",
            r["offered_per_s"],
            r.get("skipped") or r["publishes_per_s"],
            *(
                r.get(key)
                for key in (
                    "expected",
                    "delivered",
                    "lost",
                    "server_cpu_pct",
                    "cpu_us_per_publish",
                    "cpu_us_per_delivery",
                    "p50_ms",
                    "p99_ms",
                    "last_p99_ms",
                )
            ),
        ]
        for r in found
    ]
    headers = [
        "server",
        "channels",
        "offered publishes/s",
        "publishes/s handled",
        "deliveries expected",
        "received",
        "lost",
        "server CPU %",
        "µs CPU/publish",
        "µs CPU/delivery",
        "p50 ms",
        "p99 ms",
        "last-subscriber p99 ms",
    ]
    ratios = []
    for ours, peer, target in (
        ("ours-daphne", "websockets", "≤ 1.5×"),
        ("ours-daphne+redis", "websockets", "≤ 2×"),
        ("ours-daphne", "socketio", ""),
        ("ours-daphne+redis", "socketio", ""),
        ("ours-daphne+hooks", "ours-daphne", "≤ 1.1×"),
    ):
        for mine in (r for r in found if r["server"] == ours):
            other = next(
                (
                    r
                    for r in found
                    if r["server"] == peer and (r["n"], r["offered_per_s"]) == (mine["n"], mine["offered_per_s"])
                ),
                None,
            )
            if other is None or not other.get("cpu_us_per_publish") or not mine.get("cpu_us_per_publish"):
                continue
            ratio = mine["cpu_us_per_publish"] / other["cpu_us_per_publish"]
            ratios.append(
                [mine["n"], mine["offered_per_s"], ours, peer, f"{ratio:.2f}×", target, mine["lost"], other["lost"]]
            )
    ratios.sort(key=lambda line: line[:2])  # by channels, then rate (a stable sort keeps the pairs' order)
    return [
        "## Chat (2 WebSocket subscribers per channel, WebSocket client publishers)",
        "",
        "Targets: µs CPU per publish ≤ 1.5× the `websockets` rooms peer in the default shape (in-memory"
        " layer), ≤ 2× with Redis; a no-op subscribe and publish hook (`ours-daphne+hooks`) ≤ 1.1× without;"
        " 0 lost at 1,500 publishes/s on one core; last-subscriber p99 < 50 ms at 1,000 publishes/s."
        " Lost = deliveries not received 1.5 s after the last publish; a rate"
        ' above one the server handled less than half of is not run ("saturated at").',
        "",
        table(headers, lines),
        "",
        "Ratios (µs CPU per publish, ours ÷ peer: lower is better):",
        "",
        table(["channels", "offered/s", "ours", "peer", "ours ÷ peer", "target", "ours lost", "peer lost"], ratios),
        "",
    ]


def http_section(rows: list[dict[str, Any]]) -> list[str]:
    found = _found(rows, "http-publish")
    if not found:
        return []
    floor = next((r for r in found if r["server"].startswith("floor A")), None)
    targets = {"ours": "≥ 0.8×", "ours persisted, PostgreSQL": "≥ 0.5×"}
    lines = []
    for r in found:
        ratio = None
        if floor is not None and floor["requests_per_cpu_s"] and r["requests_per_cpu_s"]:
            ratio = f"{r['requests_per_cpu_s'] / floor['requests_per_cpu_s']:.2f}×"
        lines.append(
            [
                r["server"],
                r["n"],
                r["requests_per_s"],
                r["server_cpu_pct"],
                r["requests_per_cpu_s"],
                ratio,
                targets.get(r["server"], ""),
                r["p50_ms"],
                r["p99_ms"],
                r["errors"],
            ]
        )
    headers = [
        "case",
        "clients",
        "requests/s",
        "server CPU %",
        "requests/s per core",
        "÷ floor A",
        "target",
        "p50 ms",
        "p99 ms",
        "errors",
    ]
    return [
        "## HTTP publish (`POST /ws/send-to-channel`, keep-alive clients flat out)",
        "",
        '"Per core" = requests ÷ server CPU seconds. Floor A: a Django async view that parses the body'
        " and answers 202 (`bench/peers/django_floor.py`); floor B: a bare ASGI app reading the body"
        " (`bench/peers/asgi_floor.py`); both under daphne.",
        "",
        table(headers, lines),
        "",
    ]


def batch_section(rows: list[dict[str, Any]]) -> list[str]:
    found = _found(rows, "batch")
    if not found:
        return []
    targets = {"not persisted": "≥ 20,000", "persisted, PostgreSQL": "≥ 5,000"}
    lines = [
        [
            r["server"],
            r["n"],
            r.get("clients"),
            r.get("missing") or r.get("messages_per_s"),
            r.get("messages_per_cpu_s"),
            targets.get(r["server"], ""),
            r.get("p50_ms"),
            r.get("p99_ms"),
            r.get("errors"),
            r.get("mismatched"),
        ]
        for r in found
    ]
    headers = [
        "case",
        "messages per batch",
        "clients",
        "messages/s",
        "messages/s per core",
        "target (per core)",
        "request p50 ms",
        "request p99 ms",
        "errors",
        "answers without a result per message",
    ]
    return [
        f"## Batch publish (`POST {sc.BATCH_PATH}`, each message to its own channel)",
        "",
        table(headers, lines),
        "",
    ]


def hooks_section(rows: list[dict[str, Any]]) -> list[str]:
    found = _found(rows, "hooks")
    if not found:
        return []
    lines = [[r["server"], r["publish_us"], r["subscribe_us"]] for r in found]
    return [
        "## Hooks in process",
        "",
        "The server's publish and subscribe decisions called in a loop in one process (`python -m"
        " bench.hookcost`), µs of wall time per call: without a hook, with a no-op async hook, with a"
        " no-op sync hook (a hop to the hooks' threads and back). The end-to-end cost of the async pair"
        " is the `ours-daphne+hooks` row of the chat scenario.",
        "",
        table(["hook", "µs per publish decision", "µs per subscribe decision"], lines),
        "",
    ]


def idle_section(rows: list[dict[str, Any]]) -> list[str]:
    found = _found(rows, "idle")
    if not found:
        return []
    lines = [
        [
            r["server"],
            r["connected"],
            r["heartbeat_s"],
            r["seconds"],
            r["idle_cpu_pct"],
            "≤ 2 %",
            r["heartbeats"],
            r["dropped_connections"],
            r["rss_kb_per_conn"],
        ]
        for r in found
    ]
    headers = [
        "server",
        "connections",
        "heartbeat s",
        "window s",
        "server CPU % of a core",
        "target",
        "heartbeats answered",
        "dropped",
        "RSS KB/conn",
    ]
    return ["## Idle WebSockets at the default heartbeat", "", table(headers, lines), ""]


METHOD = """\
* Servers are pinned to CPU 0, the load generator (4 `bench.loadgen` processes: asyncio + uvloop,
  picows for WebSocket, raw HTTP/1.1 for SSE, each bound to its own 127.0.x.y source address) and
  the publisher to CPU 1. Our server runs with production settings (`DJANGO_DEBUG=false`; daphne
  on uvloop's event loop, the default) on SQLite and the in-process bus unless said otherwise, limits raised
  (`WEBSOCKET_MAX_CONNECTIONS`/`SSE_MAX_CONNECTIONS` 30000, no per-address or per-user connection
  limit, `CLIENT_RATE_LIMIT=0` for the WS publisher) and heartbeats every 10 s on both transports.
* Fan-out: every client subscribes to one channel; one publisher sends 100-byte payloads on a fixed
  schedule so that {deliveries:,.0f} deliveries/s are offered at any subscriber count, for {seconds:.0f} s per
  round. A payload carries its sequence number and send time; clients find it with one regex per
  frame, so latency is publish-to-delivery on one clock. "last-subscriber p99" is the p99 over
  messages of the time until the *last* subscriber had it. Lost = published × subscribers −
  delivered (summed over rounds).
* "µs CPU/delivery" = server CPU time (all its processes, user + system, from /proc) over the
  round ÷ deliveries; "deliveries/s per core" = 10⁶ ÷ that. This is the figure compared with the
  peers, because the load generator shares the machine and the publish rate is fixed.
* Peers (bench/peers/, same load generator, same payload wrapped in an envelope of our size):
  a `websockets` broadcast server (the Python ceiling), python-socketio rooms under uvicorn,
  stock django-eventstream under daphne (its own view and `send_event`), Pushpin (Debian package)
  in front of a GRIP origin, publishing through its HTTP publish API.
* Chat: `channels` channels of 2 WebSocket subscribers each (client i on channel i ÷ 2, the two on
  different load-generator processes); {chat_publishers} publishing WebSocket connections (our API key,
  so admins; no rate limit) send `send_to_channel` frames with a `request_id` to random channels on a
  fixed schedule at each offered rate for {seconds:.0f} s, and every server acknowledges each publish.
  Payloads carry the marker of the fan-outs. Lost = deliveries not received 1.5 s after the last
  publish. A publish is "handled" once it reached a subscriber: "publishes/s handled" = those ÷ the
  time until the last delivery; "µs CPU/publish" = server CPU over the round (publishing and those
  1.5 s) ÷ publishes handled, so a server that falls behind is billed for what it did, not for what
  was offered. Last-subscriber latency = from the send until the later of the two subscribers had
  it. Our server runs at the default 30 s heartbeat here (the peers ping every 30 s), in the
  default shape (in-memory layer) and with `REDIS_URL` (pub/sub layer on the local redis-server).
  Peers: a `websockets` rooms server speaking our frames (`bench/peers/ws_rooms.py`) and
  python-socketio rooms (`enter_room`, `emit(..., to=room)`, an ack per publish) under uvicorn.
  Rates are run in ascending order on one server start; publishing starts once the server is
  quiet after the connects (under half a core, at most 30 s), and before each next round it is
  left to finish any backlog (at most 15 s); late deliveries of an earlier round are not counted.
  Rates above one the server handled less than half of are not run ("saturated at").
  Each subscriber is a socket of the one server process: where the per-process limit of open
  files is too low for 2 × channels, fewer channels are used and the table says so.
* HTTP publish: one `bench.httpload` process on the client CPU (uvloop, raw HTTP/1.1, one keep-alive
  connection and one request in flight per client), {http_clients} clients posting
  `{{"channel": "hp-<i>", "message": {{"content": <~100 bytes>}}, "persist": …}}` with the API key flat
  out; 1 s of warm-up, then {http_rounds} rounds of {seconds:.0f} s. "Requests/s per core" = requests ÷
  server CPU seconds. Persisted cases run on a fresh, migrated SQLite file or PostgreSQL database.
* Batch: {batch_clients} keep-alive clients post batches of {batch_size} messages (each to its own channel,
  ~100-byte contents) flat out, the same way; every 2xx answer must list one result per message.
  While the endpoint answers 404 the table says so and the other cases are not started.
* Idle: {idle_connections:,} WebSockets subscribed to one channel, answering every heartbeat with
  `{{"action": "pong"}}`, at the default 30 s heartbeat; server CPU over {idle_seconds:.0f} s starting 5 s
  after the last connect.
* Every fan-out, connect, cluster and persist figure is the median of {rounds} rounds on one server
  start; every chat figure the median of {chat_rounds} (one chat round says little on a noisy
  machine), http-publish and batch figures of {http_rounds} (to keep `make bench` under an hour).
  Load average at each round start is kept in the raw JSON (bench/results.json); rounds under
  load > 1.5 are worth re-running."""


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    packages = [
        "Django",
        "channels",
        "daphne",
        "Twisted",
        "autobahn",
        "uvicorn",
        "uvloop",
        "websockets",
        "python-socketio",
        "django-eventstream",
        "channels-redis",
        "redis",
        "picows",
        "orjson",
    ]
    versions = []
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{name} {metadata.version(name)}")
    pushpin = (
        subprocess.run(["pushpin", "--version"], capture_output=True, text=True).stdout.strip()
        if S.pushpin_available()
        else "not installed"
    )
    return (
        f"* {cpu}, {os.cpu_count()} cores, {memory} GiB RAM; {platform.platform()}\n"
        f"* Python {platform.python_version()}; {', '.join(versions)}; {pushpin}\n"
        f"* per-process file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]:,}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )


def raise_file_limit(wanted: int = 65_536) -> None:
    """Chat at 10,000 channels holds 20,000 sockets in one server process: raise the limit of
    open files (inherited by the servers) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    except (ValueError, OSError):  # not privileged: up to the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    command = "make bench" if argv is None and len(sys.argv) == 1 else "python -m bench.run " + " ".join(sys.argv[1:])
    os.sched_setaffinity(0, {int(c) for c in S.CLIENT_CPUS.split(",")})  # the publisher shares the clients' CPU
    raise_file_limit()
    S.WORK.mkdir(parents=True, exist_ok=True)
    S.migrate(S.ours_env())
    rows = uvloop.run(collect(args))
    text = report(rows, args, command, started)
    Path(args.output).write_text(text)
    (Path(args.output).parent / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    print("\n" + text)


if __name__ == "__main__":
    main()
