"""The test kit's live server (`realtime_live_server`): a real daphne process on the test database.

The project's own test database is in-memory SQLite, which no other process can open; so the
fixture is exercised the way an application uses it, in a pytest run of its own: a settings module
giving the test database a file, a conftest enabling the plugin, and the tests below.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streaming.testing import RealtimeLiveServer, SharedDatabaseError
from streaming.testing.server import asgi_path

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = """
from pathlib import Path

from realtime_project.settings import *  # noqa: F403

DATABASES["default"]["TEST"] = {"NAME": str(Path(__file__).with_name("test-db.sqlite3"))}  # noqa: F405
"""

CONFTEST = """
import pytest

pytest_plugins = ["streaming.testing"]


@pytest.fixture(scope="session")
def realtime_live_server_env():
    return {"WS_API_KEYS": "kit-test-key"}
"""

TESTS = """
import asyncio
import json

import httpx
import websockets
from django.contrib.auth.models import User

from streaming.models import ChannelMessage


async def test_a_message_published_over_http_reaches_a_websocket_client(realtime_live_server):
    async with websockets.connect(realtime_live_server.ws + "/ws/connect") as socket:
        assert json.loads(await socket.recv())["type"] == "connected"
        await socket.send(json.dumps({"action": "subscribe", "data": {"channel": "news"}, "request_id": 1}))
        assert json.loads(await socket.recv())["type"] == "subscribed"
        async with httpx.AsyncClient(base_url=realtime_live_server.http) as http:
            response = await http.post(
                "/ws/send-to-channel",
                json={"channel": "news", "message": {"type": "news_update", "content": {"title": "hi"}}, "persist": True},
                headers={"X-API-Key": "kit-test-key"},
            )
        assert response.status_code == 202, response.text
        envelope = json.loads(await asyncio.wait_for(socket.recv(), 5))
        assert (envelope["type"], envelope["content"], envelope["offset"]) == ("news_update", {"title": "hi"}, 1)
    # The server wrote to this run's test database.
    assert await ChannelMessage.objects.filter(channel_id="news").acount() == 1


def test_the_server_reads_what_the_test_committed(realtime_live_server):
    User.objects.create_user("alice", password="s3cret-pass")
    response = httpx.post(realtime_live_server.http + "/api/token/", json={"username": "alice", "password": "s3cret-pass"})
    assert response.status_code == 200, response.text
    assert "access" in response.json()


def test_a_failure_shows_the_server_log(realtime_live_server):
    httpx.get(realtime_live_server.http + "/api/")
    assert False, "failing on purpose"
"""


@pytest.mark.server
def test_the_live_server_fixture_in_an_application_test_run(tmp_path):
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nDJANGO_SETTINGS_MODULE = kit_settings\nasyncio_mode = auto\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "kit_settings.py").write_text(textwrap.dedent(SETTINGS))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_app.py").write_text(textwrap.dedent(TESTS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "DJANGO_DEBUG": "true"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_app.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert "1 failed, 2 passed" in output, output
    assert "test_a_failure_shows_the_server_log" in output and "failing on purpose" in output
    assert "live server http://127.0.0.1:" in output and "GET /api/" in output, output


@pytest.mark.django_db
def test_an_in_memory_test_database_cannot_be_shared():
    with pytest.raises(SharedDatabaseError, match=r"in-memory SQLite database.*transactional_db"):
        RealtimeLiveServer()


def test_the_asgi_path_comes_from_the_settings():
    assert asgi_path() == "realtime_project.asgi:application"
    assert asgi_path("app.asgi.application") == "app.asgi:application"
