"""ASGI middleware: the caller's identity in the scope (WebSocket and SSE), sessions only where a
cookie asks for one, and request bodies bounded before Django reads them."""

from __future__ import annotations

from typing import Any

from channels.auth import get_user
from channels.sessions import SessionMiddlewareStack
from django.conf import settings

from streaming import protocol
from streaming.auth import ANONYMOUS, authenticator, credentials_from_scope, identity_for_user
from streaming.errors import Unauthenticated


class IdentityMiddleware:
    """Sets `scope["identity"]` from the credentials (README, "Authentication and security"), else
    the session user.

    A credential that is present but invalid leaves `scope["auth_error"]` (its reason) and an
    anonymous identity: the endpoint refuses the connection whatever its auth setting.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        credentials = credentials_from_scope(scope)
        identity, error = ANONYMOUS, None
        try:
            identity = authenticator.resolve(credentials)
        except Unauthenticated as refused:
            error = refused.detail
        if not credentials.present and "session" in scope:
            user = await get_user(scope)
            if user.is_authenticated:
                identity = identity_for_user(user)
        scope = dict(scope, identity=identity, credentials=credentials, auth_error=error)
        return await self.inner(scope, receive, send)


class SessionWhenCookie:
    """channels' session middleware stack, only for connections that carry the session cookie.

    Only a browser of a logged-in Django user needs the session (staff are admins on WS and SSE).
    Every other connection — token and API-key clients, anonymous ones — skips the cookie parsing,
    the session wrapper and their copies of the scope, which a long-lived connection would keep
    for its whole life (measured: bench/OPTIMISATIONS.md).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.with_session = SessionMiddlewareStack(inner)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        name = settings.SESSION_COOKIE_NAME.encode("latin-1")
        for header, value in scope.get("headers", ()):
            if header == b"cookie" and name in value:  # a look-alike name only costs the session lookup
                return await self.with_session(scope, receive, send)
        return await self.inner(scope, receive, send)


class BoundedBody:
    """Request bodies up to a limit, with their length known before the application reads them.

    A `Content-Length` over the limit is answered 413 without reading the body; a body without
    one (`Transfer-Encoding: chunked`) is read up to the limit — 413 past it — and handed on with
    a `content-length` header, since Django and DRF read a body of unknown length as empty. Under
    daphne the adapter refuses earlier still, before Twisted stores the body.
    """

    def __init__(self, inner: Any, limit: Any) -> None:
        self.inner = inner
        self.limit = limit  # path → bytes; the settings are read per request

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        limit = self.limit(scope.get("path", ""))
        length = _content_length(scope)
        if length is not None:
            if length > limit:
                return await _too_large(send, limit)
            return await self.inner(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client left before the body was complete
            size += len(message.get("body", b""))
            if size > limit:
                return await _too_large(send, limit)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = [*scope.get("headers", []), (b"content-length", str(len(body)).encode())]
        return await self.inner(dict(scope, headers=headers), _replay(body, receive), send)


def _content_length(scope: dict) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


BATCH_PATH = "/api/publish/batch/"


def http_body_limit(path: str) -> int:
    """The largest request body the endpoint at `path` takes (bytes): a batch of messages
    PUBLISH_BATCH_MAX_BYTES, anything else one message's SSE_MAX_MESSAGE_SIZE."""
    config = settings.REALTIME
    return config.publish_batch_max_bytes if path == BATCH_PATH else config.sse_max_message_size


def too_large_body(limit: int) -> bytes:
    """The JSON error body of a 413."""
    detail = f"Request bodies are limited to {limit} bytes."
    return protocol.encode(protocol.error_body("message_too_large", detail)).encode()


async def _too_large(send: Any, limit: int) -> None:
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": too_large_body(limit)})
