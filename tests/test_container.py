"""What the container image runs beside the server: its HEALTHCHECK and its `migrate_locked`.

The image itself is built and run by tests/image/ (`make test-image`).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from realtime_project.healthcheck import host_header
from tests.support.server import ROOT, base_env, free_port
from tests.support.services import create_postgres_database, drop_postgres_database


def healthcheck(port: int, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "realtime_project.healthcheck"],
        cwd=ROOT, env=base_env("sqlite://:memory:", PORT=str(port), **env), capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_the_healthcheck_asks_as_a_host_the_server_allows():
    assert host_header(("realtime.example.com", "127.0.0.1")) == "realtime.example.com"
    assert host_header((".example.com",)) == "example.com"
    assert host_header(("*",)) == "localhost"
    assert host_header(()) == "localhost"


@pytest.mark.server
def test_the_healthcheck_passes_on_a_healthy_server_asking_as_its_first_allowed_host(live_server_factory):
    server = live_server_factory(DJANGO_ALLOWED_HOSTS="realtime.example.com,127.0.0.1")
    checked = healthcheck(server.port, DJANGO_ALLOWED_HOSTS="realtime.example.com")
    assert checked.returncode == 0, checked.stderr
    assert healthcheck(free_port()).returncode == 1  # nothing listens there
    wrong = healthcheck(server.port, DJANGO_ALLOWED_HOSTS="elsewhere.example.com")
    assert wrong.returncode == 1 and "unhealthy: 400" in wrong.stderr


@pytest.mark.postgres
def test_containers_migrating_together_on_a_fresh_database_all_succeed():
    database_url = create_postgres_database()
    try:
        command = [sys.executable, "manage.py", "migrate_locked", "-v", "0"]
        env = base_env(database_url)
        runs = [
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(3)
        ]
        outputs = [run.communicate(timeout=120)[0] for run in runs]
        assert [run.returncode for run in runs] == [0, 0, 0], "\n".join(outputs)
        again = subprocess.run(
            [sys.executable, "manage.py", "showmigrations", "--plan"],
            cwd=ROOT, env=base_env(database_url), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "[ ]" not in again.stdout and "[X]" in again.stdout
    finally:
        drop_postgres_database(database_url)
