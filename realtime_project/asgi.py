"""ASGI entry point: HTTP (Django, including the SSE stream) and WebSocket (channels)."""

import os

from django.core.asgi import get_asgi_application
from django.urls import re_path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from streaming.api.asyncview import LeanRoute  # noqa: E402
from streaming.api.urls import LEAN_PATHS  # noqa: E402
from streaming.middleware import BoundedBody, IdentityMiddleware, SessionWhenCookie, http_body_limit  # noqa: E402
from streaming.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402
from streaming.runtime import lifespan_app  # noqa: E402

# Publishing without a session cookie skips Django's middleware (streaming/api/asyncview.py).
api_app = LeanRoute(django_asgi_app, LEAN_PATHS)

application = ProtocolTypeRouter(
    {
        "http": URLRouter([*http_urlpatterns, re_path(r"", BoundedBody(api_app, http_body_limit))]),
        "websocket": SessionWhenCookie(IdentityMiddleware(URLRouter(websocket_urlpatterns))),
        "lifespan": lifespan_app,  # daphne has no lifespan: its launcher warms up (streaming/daphne_adapter)
    }
)
