"""Real services for tests: Redis and PostgreSQL, skipped locally when absent, never under CI."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=1):
            return True
    except OSError:
        return False


def missing(message: str) -> NoReturn:
    """A real part a test needs is absent: skip locally, fail under CI, where it must be there."""
    if IN_CI:
        pytest.fail(message + " (CI must provide it)")
    pytest.skip(message)


def require(url: str, what: str) -> None:
    """Skip when the service is missing locally; fail under CI."""
    if not reachable(url):
        missing(f"{what} is not reachable at {url}")


def require_redis() -> str:
    require(REDIS_URL, "Redis")
    return REDIS_URL


def create_postgres_database() -> str:
    """Create a fresh PostgreSQL database; returns its URL."""
    require(POSTGRES_URL, "PostgreSQL")
    import psycopg

    name = f"realtime_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_psycopg_dsn(POSTGRES_URL), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(POSTGRES_URL)
    return parts._replace(path=f"/{name}").geturl()


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_psycopg_dsn(POSTGRES_URL), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _psycopg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


class PrivateRedis:
    """A redis-server of the test's own on a free port, so it can be stopped and restarted."""

    def __init__(self) -> None:
        import shutil

        from tests.support.server import free_port

        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        import subprocess
        import time

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not reachable(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary directory, a free port), so
    it can be stopped and restarted without disturbing anyone else's."""

    def __init__(self) -> None:
        import glob
        import shutil
        import tempfile

        from tests.support.server import free_port

        found = shutil.which("pg_ctl") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[::-1]), None)
        if found is None:
            missing("PostgreSQL's pg_ctl is not installed")
        self.bindir = os.path.dirname(found)
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="pg-test-")
        # initdb refuses to run as root: then the cluster belongs to the `postgres` user.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", self.directory, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        import subprocess

        subprocess.run([*self.as_user, os.path.join(self.bindir, tool), *args], check=True, capture_output=True)

    def _ctl(self, command: str) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", self.directory, "-o", options, "-l", f"{self.directory}/server.log", "-m", "fast",
                  "-w", command)  # fmt: skip

    def start(self) -> PrivatePostgres:
        self._ctl("start")
        return self

    def stop(self) -> None:
        self._ctl("stop")

    def restart(self) -> None:
        self._ctl("restart")

    def destroy(self) -> None:
        import shutil

        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
