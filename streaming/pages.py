"""The browser test pages of the two transports (README, "Quick start"), each served only while
its transport is enabled."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_GET

# Endpoints that are not Django views (the WebSocket route) or that another module mounts (SSE).
WS_CONNECT_PATH = "/ws/connect"
SSE_CONNECT_PATH = "/sse/connect"


def _api_paths() -> dict[str, str]:
    """The HTTP API endpoints the pages call, by name, as URL paths."""
    return {
        "ws_send_to_channel": reverse("ws-send-to-channel"),
        "ws_send_to_user": reverse("ws-send-to-user"),
        "sse_send_to_channel": reverse("sse-send-to-channel"),
        "notification": reverse("sse-notification"),
    }


def _page_config(**transport: Any) -> dict[str, Any]:
    """What a page's script needs to know about the server; rendered with `json_script`, no secrets."""
    config = settings.REALTIME
    return {
        "api": _api_paths(),
        "api_key_header": config.ws_api_key_header,
        "api_auth_required": config.api_auth_required,
        **transport,
    }


def _context(page_config: dict[str, Any]) -> dict[str, Any]:
    config = settings.REALTIME
    return {
        "page_config": page_config,
        "websocket_enabled": config.websocket_enabled,
        "sse_enabled": config.sse_enabled,
    }


@require_GET
def ws_test_page(request: HttpRequest) -> HttpResponse:
    """The WebSocket test page: a live session on `/ws/connect`."""
    config = settings.REALTIME
    if not config.websocket_enabled:
        raise Http404("The WebSocket transport is disabled (WEBSOCKET_ENABLED=false).")
    page_config = _page_config(
        endpoint=WS_CONNECT_PATH,
        auth_required=config.websocket_auth_required,
        heartbeat_interval=config.websocket_heartbeat_interval,
    )
    return render(request, "streaming/ws_test_page.html", _context(page_config))


@require_GET
def sse_test_page(request: HttpRequest) -> HttpResponse:
    """The SSE test page: an EventSource on `/sse/connect`, publishing through the HTTP API."""
    config = settings.REALTIME
    if not config.sse_enabled:
        raise Http404("The SSE transport is disabled (SSE_ENABLED=false).")
    page_config = _page_config(
        endpoint=SSE_CONNECT_PATH,
        auth_required=config.sse_auth_required,
        heartbeat_interval=config.sse_heartbeat_interval,
        retry_timeout=config.sse_retry_timeout,
    )
    return render(request, "streaming/sse_test_page.html", _context(page_config))


urlpatterns = [
    path("ws/test-page", ws_test_page, name="ws-test-page"),
    path("sse/test", sse_test_page, name="sse-test-page"),
]
