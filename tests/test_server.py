"""`python -m realtime_project.server`: what it sets up before daphne starts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from realtime_project import server
from tests.support.services import missing

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


def probe(code: str, argument: str, **env: str) -> str:
    """What `code` prints, run by a fresh interpreter in the repository with `argument`."""
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    result = subprocess.run(
        [sys.executable, "-c", code, argument],
        cwd=Path(__file__).resolve().parent.parent,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def arenas_after_eight_threads(mode: str, **env: str) -> int:
    return int(probe(ARENAS_PROBE, mode, **env))


def test_malloc_arenas_are_capped_at_two():
    if platform.libc_ver()[0] != "glibc":
        missing("glibc's malloc (the arena cap is glibc's)")  # CI runs on Debian: must not skip there
    assert arenas_after_eight_threads("unlimited") >= 4  # glibc: one arena per thread, up to 8 per core
    assert arenas_after_eight_threads("limited") <= server.MALLOC_ARENAS - 1  # plus the main (brk) arena
    assert arenas_after_eight_threads("limited", MALLOC_ARENA_MAX="4") >= 3  # an explicit setting wins


LOOP_PROBE = """
import asyncio, sys
from realtime_project.server import _install_event_loop
print(_install_event_loop(sys.argv[1]), type(asyncio.new_event_loop()).__module__)
"""


def loop_of(name: str) -> list[str]:
    return probe(LOOP_PROBE, name).split()


def test_daphnes_loop_is_uvloops_unless_asyncio_is_asked_for():
    assert loop_of("uvloop") == ["uvloop", "uvloop"]
    assert loop_of("asyncio") == ["asyncio", "asyncio.unix_events"]


async def test_the_server_runs_and_says_so_on_either_loop(live_server_factory):
    import json

    import httpx
    import websockets

    for name, daphne in (
        ("uvloop", live_server_factory()),
        ("asyncio", live_server_factory(SERVER_EVENT_LOOP="asyncio")),
    ):
        async with websockets.connect(daphne.ws + "/ws/connect") as socket:
            assert json.loads(await socket.recv())["type"] == "connected"
            await socket.send(json.dumps({"action": "subscribe", "data": {"channel": "loop-probe"}}))
            assert json.loads(await socket.recv())["type"] == "subscribed"
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    daphne.http + "/ws/send-to-channel", json={"channel": "loop-probe", "message": {"content": name}}
                )
            assert answer.status_code == 202, answer.text
            assert json.loads(await socket.recv())["content"] == name
        assert f"event loop {name}" in daphne.log_path.read_text()
