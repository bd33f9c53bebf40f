"""Helpers for the client tests: clients bound to a live server, polling, HTTP publishing, tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from realtime_client import ReconnectingClient, SSEClient, WebSocketClient

from tests.support.server import LiveServer


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """`make_client(WebSocketClient, server, **options)`: a client of `server`, disconnected afterwards."""
    made: list[ReconnectingClient] = []

    def make(cls: type[WebSocketClient] | type[SSEClient], server: LiveServer, **options: Any) -> Any:
        options.setdefault("reconnect_interval", 0.1)
        options.setdefault("max_reconnect_delay", 0.5)
        options.setdefault("request_timeout", 5)
        client = cls("127.0.0.1", server.port, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.disconnect()
