"""A real daphne process on the test database: `RealtimeLiveServer`.

The server is started the way production starts it (`python -m realtime_project.server … <ASGI
path>`), with the test run's settings module and its test database: the child process loads
`streaming.testing.live_settings`, which imports the original settings module and replaces its
DATABASES with the parent's (the names pytest-django gave the test databases). An in-memory SQLite
database lives in one process only, so it cannot be shared: `SharedDatabaseError` says what to use.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "DATABASES_VARIABLE",
    "SETTINGS_VARIABLE",
    "RealtimeLiveServer",
    "SharedDatabaseError",
    "asgi_path",
    "free_port",
    "shared_databases",
]

SETTINGS_VARIABLE = "STREAMING_TESTING_SETTINGS"  # the settings module the shim imports
DATABASES_VARIABLE = "STREAMING_TESTING_DATABASES"  # the DATABASES it sets, as JSON
SHIM = "streaming.testing.live_settings"
LAUNCHER = "realtime_project.server"


class SharedDatabaseError(RuntimeError):
    """The test database cannot be reached from another process."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def asgi_path(dotted: str | None = None) -> str:
    """`settings.ASGI_APPLICATION` (`package.asgi.application`) as daphne takes it (`package.asgi:application`)."""
    if dotted is None:
        from django.conf import settings

        dotted = settings.ASGI_APPLICATION
    module, _, attribute = dotted.rpartition(".")
    return f"{module}:{attribute}"


def shared_databases() -> dict[str, dict[str, Any]]:
    """The settings of every configured database as this process uses them now (under pytest-django,
    the test databases), for another process; SharedDatabaseError for an in-memory SQLite one."""
    from django.db import connections

    databases = {}
    for alias in connections:
        connection = connections[alias]
        if connection.vendor == "sqlite" and connection.is_in_memory_db():
            raise SharedDatabaseError(
                f"The test database {alias!r} is an in-memory SQLite database, which another process cannot "
                "open: a live server needs a file or a server database. Give it a file, e.g. "
                "DATABASES['default']['TEST'] = {'NAME': BASE_DIR / 'test-db.sqlite3'} in the test settings, "
                "or use PostgreSQL; and let the tests that use the live server commit their data "
                "(the `transactional_db` fixture or @pytest.mark.django_db(transaction=True))."
            )
        databases[alias] = dict(connection.settings_dict)
    return databases


class ServerProcess:
    """Stopping, restarting and reading the log of a server process (`process`, `log_path`, `start`)."""

    process: subprocess.Popen | None = None
    log_path: Path
    last_pid: int | None = None  # the pid of the process last stopped or killed

    def start(self, timeout: float = 30) -> ServerProcess:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Stop the process (SIGTERM: a graceful shutdown; SIGKILL after `timeout` seconds)."""
        if not self.running:
            return
        self.last_pid = self.process.pid
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> ServerProcess:
        """Stop and start again, on the same port and database."""
        self.stop()
        return self.start()

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")


class RealtimeLiveServer(ServerProcess):
    """One daphne process on a free port of 127.0.0.1, serving the project's ASGI application.

    `env` adds to (or, with a None value, removes from) this process's environment; `args` are
    more daphne options. `databases` defaults to `shared_databases()`, `settings_module` to
    DJANGO_SETTINGS_MODULE, `application` to settings.ASGI_APPLICATION. `http` and `ws` are the
    base URLs; `log()` is what the process printed, also shown by the pytest fixture when a test fails.
    """

    def __init__(
        self,
        *,
        env: dict[str, str | None] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
        databases: dict[str, dict[str, Any]] | None = None,
        settings_module: str | None = None,
        application: str | None = None,
        launcher: str = LAUNCHER,
        ready_path: str = "/",
        cwd: str | Path | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.args = tuple(args)
        self.launcher = launcher
        self.ready_path = ready_path
        self.cwd = str(cwd or os.getcwd())
        self.application = application if application and ":" in application else asgi_path(application)
        settings_module = settings_module or _settings_module()
        self.env = self._environment(settings_module, shared_databases() if databases is None else databases, env)
        self.process: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"realtime-live-server-{self.port}-", suffix=".log")[1])

    def _environment(
        self, settings_module: str, databases: dict[str, Any], extra: dict[str, str | None] | None
    ) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTEST_CURRENT_TEST", None)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": SHIM,
                SETTINGS_VARIABLE: settings_module,
                DATABASES_VARIABLE: json.dumps(databases, default=str),
                "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),  # what this process imports
                "PYTHONUNBUFFERED": "1",
            }
        )
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    @property
    def http(self) -> str:
        """`http://127.0.0.1:PORT`"""
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self) -> str:
        """`ws://127.0.0.1:PORT`"""
        return f"ws://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.launcher, "-b", self.host, "-p", str(self.port), *self.args,
                self.application]  # fmt: skip

    def start(self, timeout: float = 30) -> RealtimeLiveServer:
        """Start the process and wait until it answers HTTP; RuntimeError (with the log) if it does not."""
        if self.running:
            return self
        self.process = start_process(
            self.command(), cwd=self.cwd, env=self.env, log_path=self.log_path, ready=self._answers,
            timeout=timeout, name="the live server", where=self.http,
        )  # fmt: skip
        return self

    def _answers(self) -> bool:
        """Whether an HTTP request gets any response."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                request = f"GET {self.ready_path} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n"
                sock.sendall(request.encode())
                return sock.recv(16).startswith(b"HTTP/")
        except OSError:
            return False

    def __enter__(self) -> RealtimeLiveServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RealtimeLiveServer {self.http}{'' if self.running else ' (stopped)'}>"


def _settings_module() -> str:
    from django.conf import settings

    module = os.environ.get("DJANGO_SETTINGS_MODULE") or getattr(settings, "SETTINGS_MODULE", None)
    if not module:
        raise RuntimeError("DJANGO_SETTINGS_MODULE is not set: the live server needs the settings module")
    if module == SHIM:  # a live server started from a live server's process
        module = os.environ[SETTINGS_VARIABLE]
    return module


def start_process(
    command: list[str],
    *,
    cwd: Any,
    env: dict[str, str],
    log_path: Path,
    ready: Callable[[], bool],
    timeout: float,
    name: str,
    where: str,
) -> subprocess.Popen:
    """Start a server process writing to `log_path` and wait until `ready()`; RuntimeError with
    the log if it exits first (`<name> exited with <code>`) or is not ready within `timeout`
    seconds (then it is killed)."""
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        if ready():
            return process
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"{name} did not answer on {where} within {timeout} s:\n{log_path.read_text(errors='replace')}")
