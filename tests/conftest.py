"""Shared fixtures: settings overrides, consumer communicators, real daphne servers."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from tests.support.server import LiveServer, migrate, sqlite_url

logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


@pytest.fixture
def realtime(settings) -> Callable[..., None]:
    """Override fields of settings.REALTIME for one test: `realtime(client_rate_limit=5)`."""

    def override(**changes) -> None:
        settings.REALTIME = dataclasses.replace(django_settings.REALTIME, **changes)

    return override


@pytest.fixture
async def ws_app() -> AsyncIterator:
    """The project's WebSocket ASGI app, with this loop's runtime stopped afterwards."""
    from realtime_project.asgi import application
    from streaming.testing import stop_runtime  # imported here: pytest imports the plugin itself

    yield application
    await stop_runtime()


@pytest.fixture
def connect(ws_app) -> Callable:
    """Open a WebsocketCommunicator on /ws/connect and read the greeting: `await connect()`."""
    opened: list[WebsocketCommunicator] = []

    async def open_connection(query: str = "", headers=None, subprotocols=None, greet: bool = True):
        path = "/ws/connect" + (f"?{query}" if query else "")
        communicator = WebsocketCommunicator(ws_app, path, headers=headers or [], subprotocols=subprotocols)
        opened.append(communicator)
        connected, _ = await communicator.connect()
        assert connected
        if greet:
            greeting = await communicator.receive_json_from()
            assert greeting["type"] == "connected", greeting
            communicator.greeting = greeting
        return communicator

    yield open_connection
    # Communicators are disconnected by the tests that care; the app instances die with the loop.


@pytest.fixture(scope="module")
def live_server_factory(tmp_path_factory) -> Iterator[Callable[..., LiveServer]]:
    """Start real daphne processes sharing one migrated SQLite database (module scope)."""
    database = sqlite_url(str(tmp_path_factory.mktemp("db")))
    migrate(database)
    servers: list[LiveServer] = []

    def start(**env) -> LiveServer:
        server = LiveServer(database, **env).start()
        servers.append(server)
        return server

    start.database_url = database
    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def live_server(live_server_factory) -> LiveServer:
    return live_server_factory()


@pytest.fixture(autouse=True)
def _live_server_helper():
    """Shadow pytest-django's helper for its own `live_server`: ours is a real daphne process."""
    yield
