"""Real daphne processes for end-to-end tests, started the way `make run` starts one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import ClassVar

import httpx

from streaming.testing.server import ServerProcess, start_process

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Every test server accepts this API key besides any a test configures: the inspection API
# (live connections, closing them) is for admins whatever API_AUTH_REQUIRED says.
ADMIN_KEY = "test-admin-key-0d6f3a9b"
ADMIN_HEADERS = {"X-API-Key": ADMIN_KEY}


def base_env(database_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBSOCKET_", "SSE_", "WS_", "REDIS_URL"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
            "DJANGO_DEBUG": "true",
            "DATABASE_URL": database_url,
            "PYTHONUNBUFFERED": "1",
            "REGISTRY_FLUSH_INTERVAL": "0.2",
        }
    )
    env.update({key: str(value) for key, value in overrides.items()})
    env["WS_API_KEYS"] = ",".join(filter(None, [env.get("WS_API_KEYS", ""), ADMIN_KEY]))
    return env


def migrate(database_url: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=base_env(database_url),
        check=True,
    )


def sqlite_url(directory: str | None = None) -> str:
    directory = directory or tempfile.mkdtemp(prefix="realtime-test-")
    return f"sqlite:///{directory}/db.sqlite3"


class LiveServer(ServerProcess):
    """One daphne process on a free port; restartable on the same port and database."""

    started: ClassVar[list[LiveServer]] = []  # every server of this test run (their logs are checked)

    def __init__(self, database_url: str, port: int | None = None, args: tuple[str, ...] = (), **env: str) -> None:
        self.database_url = database_url
        self.args = args
        self.port = port or free_port()
        self.env = base_env(database_url, **env)
        self.process: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"daphne-{self.port}-", suffix=".log")[1])
        LiveServer.started.append(self)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> LiveServer:
        self.process = start_process(
            self.command(), cwd=ROOT, env=self.env, log_path=self.log_path, ready=self._ready, timeout=timeout,
            name=self.name, where=self.http,
        )  # fmt: skip
        return self

    name = "daphne"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "realtime_project.server", "-b", "127.0.0.1", "-p", str(self.port),
                *self.args, "realtime_project.asgi:application"]  # fmt: skip

    def _ready(self) -> bool:
        try:
            return httpx.get(self.http + "/api/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def process_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class UvicornServer(LiveServer):
    """The same ASGI application under uvicorn instead of daphne (the reliability suite compares them)."""

    name = "uvicorn"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                *self.args, "realtime_project.asgi:application"]  # fmt: skip
