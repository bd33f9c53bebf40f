"""ASGI routes of the realtime endpoints; a transport's routes are mounted only when it is enabled.

Everything else over HTTP (API, admin, pages) is Django's, routed after these.
"""

from channels.sessions import SessionMiddlewareStack
from django.conf import settings
from django.urls import path

from streaming.consumers import StreamConsumer
from streaming.middleware import IdentityMiddleware
from streaming.sse import EventStreamEndpoint

websocket_urlpatterns = [path("ws/connect", StreamConsumer.as_asgi())] if settings.REALTIME.websocket_enabled else []

http_urlpatterns = (
    [path("sse/connect", SessionMiddlewareStack(IdentityMiddleware(EventStreamEndpoint())))]
    if settings.REALTIME.sse_enabled
    else []
)
