"""ASGI middleware that puts the caller's identity into the scope (WebSocket and SSE)."""

from __future__ import annotations

from typing import Any

from channels.auth import get_user
from channels.sessions import SessionMiddlewareStack
from django.conf import settings

from streaming.auth import ANONYMOUS, authenticator, credentials_from_scope, identity_for_user
from streaming.errors import Unauthenticated


class IdentityMiddleware:
    """Sets `scope["identity"]` from the credentials of SPEC §4, else the session user.

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
