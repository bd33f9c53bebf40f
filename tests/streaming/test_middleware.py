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


# ---------------------------------------------------------------------------------------------
# BoundedBody: request bodies under any ASGI server


def _body_app():
    seen = {}

    async def app(scope, receive, send):
        message = await receive()
        seen["headers"] = dict(scope["headers"])
        seen["body"] = message["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app, seen


async def _call(app, headers, chunks):
    from streaming.middleware import BoundedBody

    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    received, sent = [], []

    async def receive():
        message = pending.pop(0)
        received.append(message)
        return message

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/ws/broadcast", "headers": headers}
    await BoundedBody(app, lambda path: 1000)(scope, receive, send)
    return sent, received


async def test_bounded_body_refuses_a_declared_length_over_the_limit_without_reading():
    app, seen = _body_app()
    sent, received = await _call(app, [(b"content-length", b"5000")], [b"x" * 5000])
    assert sent[0]["status"] == 413 and b"message_too_large" in sent[1]["body"]
    assert received == [] and seen == {}


async def test_bounded_body_gives_a_chunked_body_its_length():
    app, seen = _body_app()
    sent, _ = await _call(app, [(b"transfer-encoding", b"chunked")], [b'{"a":', b" 1}"])
    assert sent[0]["status"] == 200
    assert seen["body"] == b'{"a": 1}' and seen["headers"][b"content-length"] == b"8"


async def test_bounded_body_stops_reading_a_chunked_body_past_the_limit():
    app, seen = _body_app()
    sent, received = await _call(app, [], [b"x" * 600, b"x" * 600, b"x" * 600])
    assert sent[0]["status"] == 413 and len(received) == 2 and seen == {}
