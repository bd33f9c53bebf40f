"""`examples/*.py` run as scripts against a real daphne process, as a user runs them after `make run`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.server import ADMIN_KEY, ROOT

pytestmark = pytest.mark.server


def run_example(script: str, server, *names: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "examples" / script), "--host", "127.0.0.1", "--port", str(server.port)]
    # From another directory: the scripts must find the client package themselves.
    env = {"PATH": "/usr/bin:/bin", "REALTIME_API_KEY": ADMIN_KEY}
    return subprocess.run(
        [*command, "--wait", "0.3", *names], cwd="/", env=env, capture_output=True, text=True, timeout=60
    )


def test_websocket_examples_run_against_a_live_server(live_server):
    result = run_example("websocket_examples.py", live_server)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Получено: {" in out and "'content': 'Привет!'" in out  # the design document's example
    assert "Ошибка invalid_channel: " in out  # its error handler
    assert "subscribe_to_channel raised ReplyError with code 'invalid_channel'" in out
    assert "persisted in news at offset " in out and "still subscribed to: ['notifications']" in out
    assert "echo of my message: {'hello': 'server'}" in out
    assert "connected: " in out and "ping: " in out


def test_sse_examples_run_against_a_live_server(live_server):
    result = run_example("sse_examples.py", live_server)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Уведомление: {'event': 'notification'" in out and "Тестовое уведомление" in out
    assert "news_update (id news:" in out and "Новая статья" in out
    assert "SSE ошибка: {'condition': 'closed'" in out  # the design document's error handler
    assert "stream resumed after " in out
    assert "broadcast: Сообщение всем пользователям" in out


def test_examples_reject_unknown_names(live_server):
    result = run_example("websocket_examples.py", live_server, "nope")
    assert result.returncode == 2
    assert "unknown example(s): nope" in result.stderr
