"""`python -m realtime_client listen|publish` as a user runs it: subprocesses against real daphne."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest

from tests.support.server import ROOT

pytestmark = pytest.mark.server

CLI = [sys.executable, "-m", "realtime_client"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=30)


async def start_listener(*arguments: str) -> asyncio.subprocess.Process:
    """Start `listen` and return once it reports it is listening (on stderr)."""
    process = await asyncio.create_subprocess_exec(
        *CLI, "listen", *arguments, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(15):
        while True:
            line = (await process.stderr.readline()).decode()
            if not line:
                raise AssertionError(f"listen exited early: {(await process.stdout.read()).decode()}")
            if line.startswith("listening on"):
                return process


async def finish(process: asyncio.subprocess.Process) -> tuple[int, list[dict], str]:
    async with asyncio.timeout(15):
        stdout, stderr = await process.communicate()
    return process.returncode, [json.loads(line) for line in stdout.decode().splitlines()], stderr.decode()


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_listen_prints_each_envelope_published_with_publish_as_a_json_line(live_server, transport):
    channel = unique(f"cli-{transport}")
    url, extra = (live_server.ws, []) if transport == "ws" else (live_server.http, ["--sse"])
    listener = await start_listener("--url", url, "--channel", channel, "--count", "2", *extra)

    published = [
        run_cli("publish", "--url", live_server.http, "--channel", channel, "--content", '{"a": 1}', "--persist"),
        run_cli("publish", "--url", live_server.http, "--channel", channel, "--content", "plain text"),
    ]

    assert [result.returncode for result in published] == [0, 0], [result.stderr for result in published]
    replies = [json.loads(result.stdout) for result in published]
    assert replies[0]["offset"] == 1 and "offset" not in replies[1]
    status, envelopes, _ = await finish(listener)
    assert status == 0
    assert [envelope["id"] for envelope in envelopes] == [reply["id"] for reply in replies]
    assert [envelope["content"] for envelope in envelopes] == [{"a": 1}, "plain text"]
    assert all(envelope["channel"] == channel for envelope in envelopes)


async def test_listen_with_an_invalid_token_exits_with_the_authentication_error(live_server):
    result = await asyncio.to_thread(run_cli, "listen", "--url", live_server.ws, "--token", "forged", "--channel", "x")
    assert result.returncode == 1
    assert "AuthenticationFailed" in result.stderr and "4401" in result.stderr
    assert result.stdout == ""


def test_publish_reports_an_error_reply_and_exits_1(live_server):
    result = run_cli("publish", "--url", live_server.http, "--channel", "not a channel", "--content", "x")
    assert result.returncode == 1
    assert "invalid_channel" in result.stderr and "'channel'" in result.stderr  # the field that is wrong


def test_a_malformed_url_is_a_usage_error():
    result = run_cli("listen", "--url", "ftp://example.org", "--channel", "x")
    assert result.returncode == 2
    assert "ws://" in result.stderr
