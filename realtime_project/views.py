"""The landing page: where everything is."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def landing(request: HttpRequest) -> HttpResponse:
    config = settings.REALTIME
    return render(
        request,
        "landing.html",
        {"websocket_enabled": config.websocket_enabled, "sse_enabled": config.sse_enabled},
    )
