"""Top-level pages: the landing page, the health check and the metrics endpoint."""

import asyncio

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

from streaming import metrics, protocol
from streaming.auth import authenticator, credentials_from_request
from streaming.bus import get_bus
from streaming.errors import Unauthenticated
from streaming.runtime import registry_health

HEALTH_TIMEOUT_SECONDS = 2.0


def landing(request: HttpRequest) -> HttpResponse:
    config = settings.REALTIME
    return render(
        request,
        "landing.html",
        {"websocket_enabled": config.websocket_enabled, "sse_enabled": config.sse_enabled},
    )


@csrf_exempt  # a POST to a URL that does not exist is a 404, not a CSRF failure
def api_not_found(request: HttpRequest) -> JsonResponse:
    """404 in the API's JSON error shape for a URL under /api/ or /ws/ that no route matches
    (in debug mode too, where Django would answer with its HTML page)."""
    detail = "No such URL."
    if not request.path.endswith("/"):
        try:
            resolve(request.path + "/")
            detail = f"No such URL; did you mean {request.path}/ ?"
        except Resolver404:
            pass
    return JsonResponse(protocol.error_body("not_found", detail), status=404)


async def _bus_check() -> None:
    await asyncio.wait_for(get_bus().aping(), HEALTH_TIMEOUT_SECONDS)


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the message bus answer and this process's registry writes
    succeed, else 503 naming what failed."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"error: {type(error).__name__}"
    try:
        async_to_sync(_bus_check)()
        checks["bus"] = "ok"
    except Exception as error:
        checks["bus"] = f"error: {type(error).__name__}"
    problem = registry_health()
    checks["registry"] = "ok" if problem is None else f"error: {problem}"
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "unavailable", "checks": checks}
    return JsonResponse(body, status=200 if healthy else 503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics; with API_AUTH_REQUIRED, admins only (e.g. `?api_key=` in the scrape config)."""
    if settings.REALTIME.api_auth_required:
        try:
            identity = authenticator.resolve(credentials_from_request(request))
        except Unauthenticated as error:
            return JsonResponse(protocol.error_body("unauthenticated", error.detail), status=401)
        if not identity.is_authenticated:
            body = protocol.error_body("unauthenticated", "Metrics need an admin credential.")
            return JsonResponse(body, status=401, headers={"WWW-Authenticate": 'Bearer realm="api"'})
        if not identity.is_admin:
            return JsonResponse(protocol.error_body("forbidden", "Metrics are for admins."), status=403)
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)
