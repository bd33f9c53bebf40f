"""The reliability suite: figures recorded by each test, and probes of server processes.

Tests marked `reliability` take minutes and run with `make test-reliability`; the others here
are fast versions of the same checks and run with `make test`. Each figure a test records is
printed at the end of the run and written to `.reliability/figures/` (docs/RELIABILITY.md
quotes them, with the command that reproduces each).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from tests.support.server import ROOT

FIGURES = ROOT / ".reliability" / "figures"


@pytest.fixture
def figure(request) -> Callable[..., None]:
    """Record figures of this test: `figure(connections=1000, reconnected=1000)`."""

    def record(**values) -> None:
        FIGURES.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
        path = FIGURES / f"{name}.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**previous, **values}, indent=1, sort_keys=True))
        request.config.stash.setdefault(_RECORDED, {}).setdefault(request.node.nodeid, {}).update(values)

    return record


_RECORDED = pytest.StashKey[dict]()


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "last_of_run: run after every other test of the session (it reads their logs)")


def pytest_collection_modifyitems(config, items) -> None:
    last = [item for item in items if item.get_closest_marker("last_of_run")]
    for item in last:
        items.remove(item)
        items.append(item)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    recorded = config.stash.get(_RECORDED, {})
    if not recorded:
        return
    terminalreporter.section("reliability figures")
    for nodeid, values in recorded.items():
        terminalreporter.write_line(nodeid)
        for key, value in values.items():
            terminalreporter.write_line(f"    {key} = {value}")
