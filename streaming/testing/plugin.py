"""The pytest fixtures of `streaming.testing` (enabled with `pytest_plugins = ["streaming.testing"]`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from streaming.testing.client import RealtimeTestClient, make_token
from streaming.testing.recorder import PublishRecorder, record_published
from streaming.testing.server import RealtimeLiveServer

__all__ = [
    "pytest_runtest_makereport",
    "realtime_asgi_app",
    "realtime_client",
    "realtime_live_server",
    "realtime_live_server_env",
    "realtime_published",
]

_live_servers = pytest.StashKey[list[RealtimeLiveServer]]()


@pytest.fixture
def realtime_published() -> Iterator[PublishRecorder]:
    """Every message delivered through the publish path during the test (`PublishRecorder`)."""
    with record_published() as recorder:
        yield recorder


@pytest_asyncio.fixture
async def realtime_asgi_app() -> AsyncIterator[Any]:
    """The ASGI application the in-process clients talk to: settings.ASGI_APPLICATION. Override
    this fixture to test another one. Afterwards the realtime runtime of the test's event loop is
    stopped (its hub and connection registry)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    yield import_string(settings.ASGI_APPLICATION)
    await stop_runtime()


async def stop_runtime() -> None:
    """Stop the realtime runtime of the running event loop, if one was started."""
    from channels.layers import channel_layers, get_channel_layer

    from streaming.runtime import _runtimes

    runtime = _runtimes.pop(asyncio.get_running_loop(), None)
    if runtime is not None:
        await runtime.stop()
    layer = get_channel_layer()
    if hasattr(layer, "flush"):
        await layer.flush()
    channel_layers.backends.clear()


@pytest_asyncio.fixture
async def realtime_client(realtime_asgi_app, transactional_db) -> AsyncIterator[Callable[..., RealtimeTestClient]]:
    """Make in-process WebSocket clients of `realtime_asgi_app`:

    ``async with realtime_client(user_id="u1", claims={"role": "admin"}) as client:``

    Arguments: `token`, or `user_id` (and `claims`) to have one made (`make_token`), then those of
    `RealtimeTestClient` (`api_key`, `query`, `headers`, `path`, `timeout`, …). Clients still open
    at the end are closed. It uses `transactional_db`: the server side commits in its own threads.
    """
    clients: list[RealtimeTestClient] = []

    def make(
        token: str | None = None,
        *,
        user_id: str | None = None,
        claims: dict[str, Any] | None = None,
        **options: Any,
    ) -> RealtimeTestClient:
        if user_id is not None:
            if token is not None:
                raise TypeError("give a token or a user_id, not both")
            token = make_token(user_id, **(claims or {}))
        client = RealtimeTestClient(realtime_asgi_app, token=token, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):  # the test has failed already, or meant the connection to fail
            await client.close()


@pytest.fixture(scope="session")
def realtime_live_server_env() -> dict[str, str | None]:
    """Environment variables of live server processes (None removes one); override it to
    configure them, e.g. `{"WS_API_KEYS": "test-key"}`."""
    return {}


@pytest.fixture
def realtime_live_server(request, transactional_db, realtime_live_server_env) -> Iterator[RealtimeLiveServer]:
    """A real daphne process serving the project on the test database, started for this test and
    stopped after it (`RealtimeLiveServer`: `.http`, `.ws`, `.log()`, `.stop()`). Its log is added
    to the report of a failed test. Needs a test database other processes can open (a file SQLite
    database or PostgreSQL); the test's data is committed (`transactional_db`)."""
    server = RealtimeLiveServer(env=realtime_live_server_env)
    request.node.stash.setdefault(_live_servers, []).append(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Add the logs of a failed test's live servers to its report."""
    report = yield
    if report.failed:
        for server in item.stash.get(_live_servers, []):
            report.sections.append((f"live server {server.http} log", server.log() or "(empty)"))
    return report
