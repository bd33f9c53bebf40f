"""DRF views whose handlers run on the event loop, and the lean route that reaches them.

A DRF `APIView` answers on a thread of its own under ASGI; so would adrf's async views for
their `initial()` (authentication, permissions) and Django for every sync middleware and the
response's rendering — a thread hop each, most of a publish's cost. `AsyncAPIView` runs all of it
on the loop: its authentication is CPU work only (a JWT, an API key) except for a session, which
needs the database and so takes a thread (only requests that carry the session cookie do), and
it renders its response itself.

`LeanRoute` sends cookie-less requests to such views past Django's middleware: clients that
publish with a token or an API key need none of it (no session, no CSRF, no messages, no HTML),
and each sync middleware is a thread hop under ASGI. Requests with the session cookie — browsers,
the browsable API — take the whole stack as before.
"""

from __future__ import annotations

import io
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.views import APIView

from streaming import protocol


def has_session_cookie(headers: Any) -> bool:
    """Whether a request carries Django's session cookie (a look-alike name costs a session read)."""
    name = settings.SESSION_COOKIE_NAME.encode("latin-1")
    return any(header == b"cookie" and name in value for header, value in headers)


class AsyncAPIView(APIView):
    """An APIView with `async def` handlers, dispatched on the event loop."""

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.view_is_async:
            return super().dispatch(request, *args, **kwargs)
        return self._adispatch(request, *args, **kwargs)

    async def _adispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        in_thread = settings.SESSION_COOKIE_NAME in request.COOKIES
        try:
            if in_thread:  # SessionAuthentication reads the session from the database
                await sync_to_async(self.initial)(request, *args, **kwargs)
            else:
                self.initial(request, *args, **kwargs)
            method = request.method.lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            if handler is None:
                raise MethodNotAllowed(request.method)
            response = handler(request, *args, **kwargs)
            if method != "options":
                response = await response
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        if in_thread:  # the browsable API's HTML may read the session or the user
            return await sync_to_async(_rendered)(self.response)
        return _rendered(self.response)


def _rendered(response: Any) -> HttpResponse:
    """A rendered plain HttpResponse: Django would render a DRF Response on a thread of its own."""
    if not hasattr(response, "render"):
        return response
    response.render()
    plain = HttpResponse(response.content, status=response.status_code)
    for name, value in response.items():
        plain[name] = value
    return plain


class LeanRoute:
    """ASGI: cookie-less requests to AsyncAPIViews go straight to the view; the rest to Django."""

    def __init__(self, django_app: ASGIHandler, paths: frozenset[str]) -> None:
        self.django_app = django_app
        self.paths = paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] not in self.paths or has_session_cookie(scope.get("headers", ())):
            return await self.django_app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        request = ASGIRequest(scope, io.BytesIO(bytes(body)))
        response = await self._respond(request)
        await self.django_app.send_response(response, send)

    async def _respond(self, request: ASGIRequest) -> HttpResponse:
        try:
            request.get_host()  # ALLOWED_HOSTS, as Django's middleware would check it
            match = resolve(request.path_info)
        except DisallowedHost:
            return JsonResponse(protocol.error_body("invalid_message", "Host not allowed."), status=400)
        except Resolver404:
            return JsonResponse(protocol.error_body("not_found", "No such URL."), status=404)
        return await match.func(request, *match.args, **match.kwargs)
