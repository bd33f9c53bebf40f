"""`make bench`: run the scenarios, print the tables and write bench/RESULTS.md.

    python -m bench.run                      # everything (~20 min), 3 rounds per figure
    python -m bench.run --only ws-fanout --sizes 1000 --rounds 1 --output /tmp/r.md

The servers run on CPU 0 (BENCH_SERVER_CPUS), the load generator and publisher on CPU 1
(BENCH_CLIENT_CPUS). Every figure is the median of --rounds measured rounds on one server start;
CPU is read from /proc/<pid>/stat (utime + stime of every server process), so "µs CPU per
delivery" stays meaningful when the machine is busy, where wall-clock rates would not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import uvloop

from bench import scenarios as sc
from bench import servers as S

SCENARIOS = ("ws-fanout", "sse-fanout", "connect", "cluster", "persist")
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
        METHOD.format(rounds=args.rounds, seconds=args.seconds, deliveries=args.deliveries),
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
    if errors:
        parts += ["## Failed runs", "", table(["run", "error"], [[r["server"], r["error"]] for r in errors]), ""]
    log = HERE / "OPTIMISATIONS.md"
    if log.exists():
        parts += [log.read_text().strip(), ""]
    return "\n".join(parts)


METHOD = """\
* Servers are pinned to CPU 0, the load generator (4 `bench.loadgen` processes: asyncio + uvloop,
  picows for WebSocket, raw HTTP/1.1 for SSE, each bound to its own 127.0.x.y source address) and
  the publisher to CPU 1. Our server runs with production settings (`DJANGO_DEBUG=false`) on
  SQLite and the in-memory channel layer unless said otherwise, limits raised
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
* Every figure is the median of {rounds} rounds on one server start. Load average at each round
  start is kept in the raw JSON (bench/results.json); rounds under load > 1.5 are worth re-running."""


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
        f"* per-process file limit {__import__('resource').getrlimit(__import__('resource').RLIMIT_NOFILE)[0]:,}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    command = "make bench" if argv is None and len(sys.argv) == 1 else "python -m bench.run " + " ".join(sys.argv[1:])
    os.sched_setaffinity(0, {int(c) for c in S.CLIENT_CPUS.split(",")})  # the publisher shares the clients' CPU
    S.WORK.mkdir(parents=True, exist_ok=True)
    S.migrate(S.ours_env())
    rows = uvloop.run(collect(args))
    text = report(rows, args, command, started)
    Path(args.output).write_text(text)
    (Path(args.output).parent / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    print("\n" + text)


if __name__ == "__main__":
    main()
