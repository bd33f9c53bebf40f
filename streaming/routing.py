"""ASGI routes of the realtime endpoints; a transport's routes are mounted only when it is enabled.

Everything else over HTTP (API, admin, pages) is Django's, routed after these.
"""

from typing import Any

from django.conf import settings
from django.urls import path, re_path

from streaming.consumers import StreamConsumer
from streaming.echo import echo
from streaming.middleware import IdentityMiddleware, SessionWhenCookie
from streaming.sse import EventStreamEndpoint


async def refuse_websocket(scope: dict, receive: Any, send: Any) -> None:
    """Any other WebSocket path (or all of them when WEBSOCKET_ENABLED=false): refuse the handshake.

    A close before accept is daphne's HTTP 403; without this route the router raises (HTTP 500).
    """
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1008})


websocket_urlpatterns = [
    *([path("ws/connect", StreamConsumer.as_asgi())] if settings.REALTIME.websocket_enabled else []),
    # Test-only: the conformance fuzzer's echo, behind the same middleware (RELIABILITY_ECHO_ROUTE).
    *([path("ws/echo", echo)] if settings.REALTIME.reliability_echo_route else []),
    re_path(r"", refuse_websocket),
]

http_urlpatterns = (
    [path("sse/connect", SessionWhenCookie(IdentityMiddleware(EventStreamEndpoint())))]
    if settings.REALTIME.sse_enabled
    else []
)
