"""`python -m realtime_project.server`: the tuning it applies to daphne's stack."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from pprint import pformat

import pytest
from autobahn.websocket import protocol

from realtime_project import server
from tests.support.services import missing


class CountsRepr:
    def __init__(self) -> None:
        self.calls = 0

    def __repr__(self) -> str:
        self.calls += 1
        return "counted"


@pytest.fixture
def deferred(monkeypatch):
    monkeypatch.setattr(protocol, "pformat", protocol.pformat)
    monkeypatch.setattr(protocol.Timings, "__str__", protocol.Timings.__str__)
    server._defer_autobahn_debug_formatting()


def test_autobahn_debug_value_is_not_formatted_unless_written(deferred):
    value = CountsRepr()
    held = protocol.pformat([("openHandshakeTimeout", value, "Factory")])
    assert value.calls == 0
    assert f"\n{held}" == "\n" + pformat([("openHandshakeTimeout", value, "Factory")])
    assert value.calls == 2  # once by the log line, once by the reference above


def test_autobahn_debug_line_reads_as_before(deferred):
    config = [("autoPingInterval", 0, "WebSocketServerFactory"), ("maxMessagePayloadSize", 1 << 20, "Protocol")]
    assert str(protocol.pformat(config)) == pformat(config)
    assert f"{protocol.pformat(config)!s:>5}" == pformat(config)


def test_autobahn_timings_still_print_as_text(deferred):
    timings = protocol.Timings()
    timings.track("onOpen")
    assert isinstance(str(timings), str) and "onOpen" in str(timings)


ARENAS_PROBE = """
import re, sys, threading
if sys.argv[1] == "limited":
    from realtime_project.server import _limit_malloc_arenas
    _limit_malloc_arenas()
started, done = threading.Barrier(9), threading.Event()
held = []
def work():
    held.append(bytearray(64 * 1024).copy())  # over pymalloc's limit: glibc malloc, on this thread's arena
    started.wait()
    done.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
started.wait()
# Thread arenas are mmapped read-write at 64 MiB-aligned addresses; the main arena is the brk heap.
maps = open("/proc/self/maps").read().splitlines()
print(sum(1 for line in maps if re.match(r"^[0-9a-f]*[048c]000000-\\S+ rw-p 00000000 00:00 0\\s*$", line)))
done.set()
"""


def arenas_after_eight_threads(mode: str, **env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    result = subprocess.run(
        [sys.executable, "-c", ARENAS_PROBE, mode],
        cwd=Path(__file__).resolve().parent.parent,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout)


def test_malloc_arenas_are_capped_at_two():
    if platform.libc_ver()[0] != "glibc":
        missing("glibc's malloc (the arena cap is glibc's)")  # CI runs on Debian: must not skip there
    assert arenas_after_eight_threads("unlimited") >= 4  # glibc: one arena per thread, up to 8 per core
    assert arenas_after_eight_threads("limited") <= server.MALLOC_ARENAS - 1  # plus the main (brk) arena
    assert arenas_after_eight_threads("limited", MALLOC_ARENA_MAX="4") >= 3  # an explicit setting wins
