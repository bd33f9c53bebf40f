"""The WebSocket/SSE middleware: the session stack only where a session cookie comes."""

from __future__ import annotations

import pytest

from streaming.middleware import SessionWhenCookie

pytestmark = pytest.mark.django_db


async def scope_seen(headers: list[tuple[bytes, bytes]]) -> dict:
    seen = {}

    async def inner(scope, receive, send):
        seen.update(scope)

    await SessionWhenCookie(inner)({"type": "websocket", "path": "/ws/connect", "headers": headers}, None, None)
    return seen


async def test_no_session_cookie_no_session_stack():
    scope = await scope_seen([(b"user-agent", b"bot"), (b"cookie", b"theme=dark")])
    assert "session" not in scope and "cookies" not in scope


async def test_a_session_cookie_gets_the_session():
    scope = await scope_seen([(b"cookie", b"theme=dark; sessionid=abc")])
    assert scope["cookies"] == {"theme": "dark", "sessionid": "abc"}
    assert "session" in scope
