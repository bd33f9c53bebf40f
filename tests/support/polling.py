"""Helpers of the client tests: waiting for a condition, publishing around the client under test,
tokens, and counting a server's refusals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.server import LiveServer


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `predicate` every 10 ms until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def publish(server: LiveServer, channel: str, content: Any, *, persist: bool = False, type: str | None = None) -> dict:
    """Publish over the HTTP API of `server` (not through the client under test)."""
    message: dict[str, Any] = {"content": content}
    if type is not None:
        message["type"] = type
    response = httpx.post(
        server.http + "/ws/send-to-channel", json={"channel": channel, "message": message, "persist": persist}
    )
    assert response.status_code == 202, response.text
    return response.json()


def token_for(user_id: str, **claims: Any) -> str:
    from streaming.auth import authenticator

    return authenticator.create_access_token({"sub": user_id, **claims})


def refusals(server: LiveServer, transport: str) -> int:
    """How many connections of `transport` the server has refused so far (from its log)."""
    return server.log().count(f"refuse transport={transport} ")
