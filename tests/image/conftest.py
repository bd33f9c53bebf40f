"""The image under test: built once per run from this tree's Dockerfile (tests/support/docker.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support import docker

BUILT: dict[str, str] = {}  # what the terminal summary reports


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    base: str
    why: str  # why this base: present, pulled, or why the stand-in


@pytest.fixture(scope="session")
def daemon() -> Iterator[docker.Daemon]:
    """A Docker daemon that answers: the running one, or Debian's started for this run."""
    daemon = docker.Daemon().start()
    try:
        docker.remove_test_containers()
        yield daemon
    finally:
        docker.remove_test_containers()
        daemon.stop()


@pytest.fixture(scope="session")
def built_image(daemon) -> BuiltImage:
    base, why = docker.base_image()
    docker.build_image(base)
    BUILT.update(
        base=base,
        why=why,
        image_mb=f"{docker.image_size(docker.IMAGE) / 1e6:.0f}",
        base_mb=f"{docker.image_size(base) / 1e6:.0f}",
    )
    return BuiltImage(docker.IMAGE, base, why)


def production_env(**overrides: str) -> dict[str, str]:
    """What a deployment sets (README "Deployment"), with fresh keys."""
    return {
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        "WS_JWT_SECRET_KEY": secrets.token_urlsafe(40),
        **overrides,
    }


def pytest_terminal_summary(terminalreporter) -> None:
    if BUILT:
        terminalreporter.write_line(
            f"image {docker.IMAGE}: {BUILT['image_mb']} MB on {BUILT['base']} ({BUILT['base_mb']} MB): {BUILT['why']}"
        )
