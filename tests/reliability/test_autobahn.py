"""WebSocket conformance: Autobahn|Testsuite's fuzzing client against daphne and uvicorn.

The testee is the test-only echo route `/ws/echo` (RELIABILITY_ECHO_ROUTE=true), mounted behind
the same server, session and identity middleware as `/ws/connect`, so what is measured is the
WebSocket stack the product runs on. Groups 1-7 (framing, pings, reserved bits, opcodes,
fragmentation, UTF-8, closing), 9 (limits and performance) and 10 (misc).

Autobahn|Testsuite runs on Python 2.7 only; `make test-reliability` installs it into
`.reliability/autobahn` (tests/reliability/autobahn-requirements.txt). The full reports land in
`.reliability/autobahn-report/<server>/index.html`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets

from tests.support.server import ROOT, LiveServer, UvicornServer, migrate, sqlite_url
from tests.support.services import missing

pytestmark = [pytest.mark.reliability, pytest.mark.server, pytest.mark.timeout(1800)]

AUTOBAHN = ROOT / ".reliability" / "autobahn"
PYTHON2 = os.environ.get("AUTOBAHN_PYTHON", str(Path.home() / ".pyenv/versions/2.7.18/bin/python"))
REPORTS = ROOT / ".reliability" / "autobahn-report"
GROUPS = ["1", "2", "3", "4", "5", "6", "7", "9", "10"]
STRICT_GROUPS = {"1", "2", "3", "4", "5", "6", "7", "10"}  # 0 failures, except what the server cannot do

# daphne never sends an empty message: `WebSocketProtocol.handle_reply` sends text or bytes only
# `if message.get("text")` / `if message.get("bytes")`, so the echo of a 0-byte message is lost.
DAPHNE_EMPTY_MESSAGE_CASES = {"1.1.1", "1.2.1", "6.1.1", "6.1.2", "9.7.1", "9.8.1"}
# Messages over WEBSOCKET_MAX_MESSAGE_SIZE (enforced inside daphne's WebSocket protocol; 1 MiB for
# this suite, whose group 9 sends up to 16 MiB): the echo cannot happen; the connection must be
# closed with 1009 and the server must stay up.
ECHO_LIMIT = 1024 * 1024
DAPHNE_OVERSIZED_CASES = {
    "9.1.4", "9.1.5", "9.1.6", "9.2.4", "9.2.5", "9.2.6",
    *(f"9.3.{n}" for n in range(1, 10)), *(f"9.4.{n}" for n in range(1, 10)),
}  # fmt: skip
# uvicorn's default `websockets-sansio` implementation answers a close that interrupts a
# fragmented message with 1002 ("incomplete fragmented message") where Autobahn wants 1000.
UVICORN_CANNOT = {"7.1.5"}


def wstest(spec: dict, log: Path) -> None:
    """Run Autobahn's `wstest` (Python 2.7) with a spec; its report goes to spec["outdir"]."""
    if not (AUTOBAHN / "autobahntestsuite").is_dir() or not Path(PYTHON2).exists():
        missing(f"Autobahn|Testsuite is not installed in {AUTOBAHN} for {PYTHON2} (make test-reliability installs it)")
    spec_path = log.with_suffix(".json")
    spec_path.write_text(json.dumps(spec))
    runner = (
        "import site, sys; site.addsitedir(sys.argv[1]); "
        "sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', sys.argv[2]]; "
        "from autobahntestsuite.wstest import run; run()"
    )
    with log.open("w") as out:
        subprocess.run(
            [PYTHON2, "-c", runner, str(AUTOBAHN), str(spec_path)], stdout=out, stderr=subprocess.STDOUT, timeout=1200
        )


def run_suite(agent: str, server: LiveServer, tmp: Path) -> dict[str, dict]:
    outdir = REPORTS / agent
    shutil.rmtree(outdir, ignore_errors=True)
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": f"{server.ws}/ws/echo"}],
        "cases": [f"{group}.*" for group in GROUPS],
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    wstest(spec, tmp / f"wstest-{agent}.log")
    index = json.loads((outdir / "index.json").read_text())[agent]
    return {
        case: {**result, **json.loads((outdir / result["reportfile"]).read_text())} for case, result in index.items()
    }


def by_group(results: dict[str, dict]) -> dict[str, collections.Counter]:
    groups: dict[str, collections.Counter] = {group: collections.Counter() for group in GROUPS}
    for case, result in results.items():
        groups[case.split(".")[0]][result["behavior"]] += 1
    return groups


def failed(results: dict[str, dict], groups: set[str] | None = None) -> set[str]:
    return {
        case
        for case, result in results.items()
        if result["behavior"] in ("FAILED", "UNIMPLEMENTED") and (groups is None or case.split(".")[0] in groups)
    }


async def server_still_serves(server: LiveServer) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http + "/api/")).status_code == 200
    async with websockets.connect(server.ws + "/ws/connect") as socket:
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] == "connected"


def record_groups(figure, agent: str, results: dict[str, dict]) -> None:
    for group, counts in by_group(results).items():
        figure(**{f"{agent}_group_{group}": dict(sorted(counts.items()))})
    figure(**{f"{agent}_failed": sorted(failed(results), key=lambda c: [int(x) for x in c.split(".")])})


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> str:
    url = sqlite_url(str(tmp_path_factory.mktemp("autobahn-db")))
    migrate(url)
    return url


@pytest.fixture(scope="module")
def daphne_results(database, tmp_path_factory):
    server = LiveServer(database, RELIABILITY_ECHO_ROUTE="true", WEBSOCKET_MAX_MESSAGE_SIZE=str(ECHO_LIMIT)).start()
    try:
        yield server, run_suite("daphne", server, tmp_path_factory.mktemp("autobahn"))
    finally:
        server.kill()


@pytest.fixture(scope="module")
def uvicorn_results(database, tmp_path_factory):
    # uvicorn's default WebSocket implementation (what `--ws auto` picks with websockets installed)
    args = ("--ws", "websockets-sansio", "--http", "h11")
    server = UvicornServer(database, args=args, RELIABILITY_ECHO_ROUTE="true")
    server.start()
    try:
        yield server, run_suite("uvicorn", server, tmp_path_factory.mktemp("autobahn"))
    finally:
        server.kill()


async def test_daphne_passes_groups_1_to_7_and_10_but_for_empty_messages(daphne_results, figure):
    server, results = daphne_results
    record_groups(figure, "daphne", results)
    assert len(results) > 300, "Autobahn did not run the whole suite"
    assert failed(results, STRICT_GROUPS) <= DAPHNE_EMPTY_MESSAGE_CASES
    assert failed(results, {"9"}) <= DAPHNE_EMPTY_MESSAGE_CASES | DAPHNE_OVERSIZED_CASES
    await server_still_serves(server)
    assert server.process.poll() is None


async def test_daphne_closes_oversized_messages_cleanly_with_1009(daphne_results, figure):
    server, results = daphne_results
    oversized = {case: results[case] for case in DAPHNE_OVERSIZED_CASES}
    codes = collections.Counter((r.get("remoteCloseCode"), r.get("wasClean")) for r in oversized.values())
    figure(daphne_oversized_close=str(dict(codes)))
    async with websockets.connect(server.ws + "/ws/connect", max_size=None) as socket:
        await socket.recv()
        await socket.send("x" * (2 * 1024 * 1024))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
    figure(ws_connect_2mib_close=str(closed.value.rcvd and closed.value.rcvd.code))
    await server_still_serves(server)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert codes == {(1009, True): len(DAPHNE_OVERSIZED_CASES)}


async def test_uvicorn_passes_every_group_but_one_close_case(uvicorn_results, figure):
    server, results = uvicorn_results
    record_groups(figure, "uvicorn", results)
    assert len(results) > 300, "Autobahn did not run the whole suite"
    assert failed(results) <= UVICORN_CANNOT
    await server_still_serves(server)
