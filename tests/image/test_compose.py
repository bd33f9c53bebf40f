"""docker-compose.yml, validated by Compose itself (`config`: schema, interpolation, references).

Its nginx, postgres and redis images come from a registry, which this project's machines and CI
cannot reach, so the file is validated here, not run (README "Deployment"); the same topology runs
for real in test_image.py (two containers of the image behind nginx on PostgreSQL and Redis).
Compose v2 (`docker compose`) is used where its plugin is installed; Debian's packages have only
Compose v1 (`docker-compose`, package docker-compose), whose `config` validates the file against
the Compose specification's schema.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.support import docker
from tests.support.server import ROOT
from tests.support.services import missing

pytestmark = [pytest.mark.image]

SECRETS = {"DJANGO_SECRET_KEY": "k" * 50, "WS_JWT_SECRET_KEY": "j" * 40}


def compose_command() -> list[str]:
    try:
        if docker.docker("compose", "version", check=False, timeout=20).returncode == 0:
            return [docker.DOCKER, "compose"]
    except (OSError, subprocess.TimeoutExpired):
        pass
    found = shutil.which("docker-compose")
    if found is None:
        missing("neither `docker compose` nor docker-compose is installed (Debian: apt-get install docker-compose)")
    return [found]


def compose_config(tmp_path, **env: str) -> subprocess.CompletedProcess:
    empty = tmp_path / "empty.env"  # not a developer's .env beside the file
    empty.write_text("")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "WS_", "COMPOSE_"))}
    return subprocess.run(
        [*compose_command(), "--project-directory", str(ROOT), "--file", str(ROOT / "docker-compose.yml"),
         "--env-file", str(empty), "config"],
        capture_output=True, text=True, timeout=60, env={**clean, **env},
    )  # fmt: skip


def test_the_compose_file_is_valid_and_describes_the_production_shape(tmp_path):
    result = compose_config(tmp_path, **SECRETS)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"app1", "app2", "nginx", "postgres", "redis"}
    for name in ("app1", "app2"):
        app = services[name]
        assert os.path.realpath(app["build"]["context"]) == os.path.realpath(ROOT)  # this Dockerfile
        assert app["environment"]["DJANGO_DEBUG"] == "false"
        assert app["environment"]["DJANGO_SECRET_KEY"] == SECRETS["DJANGO_SECRET_KEY"]
        assert app["environment"]["DATABASE_URL"].startswith("postgres://")
        assert app["environment"]["REDIS_URL"].startswith("redis://")
        assert {"postgres", "redis"} <= set(app["depends_on"])
        assert app["read_only"] is True  # the image writes nothing (test_image.py runs it so)
    mounts = [str(volume) for volume in services["nginx"]["volumes"]]
    assert any("deploy/nginx.conf" in mount and "/etc/nginx/conf.d/default.conf" in mount for mount in mounts), mounts


def test_the_compose_file_refuses_to_start_without_secrets(tmp_path):
    result = compose_config(tmp_path)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
