"""The DRF exception handler: every API error becomes the one error shape of `protocol`."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from streaming import protocol
from streaming.errors import DatabaseUnavailable, StreamingError

logger = logging.getLogger(__name__)

_DRF_CODES: list[tuple[type[Exception], str]] = [
    (exceptions.ValidationError, "invalid_message"),
    (exceptions.ParseError, "invalid_json"),
    (exceptions.NotAuthenticated, "unauthenticated"),
    (exceptions.AuthenticationFailed, "unauthenticated"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "rate_limited"),
]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable for %s: %s", context["request"].path, exc)
        exc = DatabaseUnavailable()
    if isinstance(exc, StreamingError):
        body = protocol.error_body(exc.code, exc.detail, exc.fields)
        return Response(body, status=exc.status_code, headers=_auth_header(exc, context))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return Response(protocol.error_body("message_too_large", "The request body is too large."), status=413)
    if not isinstance(exc, exceptions.APIException):
        return None
    code = next((code for kind, code in _DRF_CODES if isinstance(exc, kind)), "error")
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, exceptions.ValidationError):
        if "invalid_channel" in _leaf_codes(exc.get_codes()):
            code = "invalid_channel"  # the same code as on WebSocket and /sse/connect
        body = protocol.error_body(code, "The request body is invalid.", _fields(exc.detail))
    else:
        body = protocol.error_body(code, str(exc.detail))
    return Response(body, status=exc.status_code, headers=headers)


def _leaf_codes(codes: Any) -> set[str]:
    if isinstance(codes, dict):
        return set().union(*(_leaf_codes(value) for value in codes.values())) if codes else set()
    if isinstance(codes, list):
        return set().union(*(_leaf_codes(value) for value in codes)) if codes else set()
    return {str(codes)}


def _fields(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return detail
    return {"non_field_errors": detail}


def _auth_header(exc: StreamingError, context: dict[str, Any]) -> dict[str, str]:
    if exc.status_code == 401:
        return {"WWW-Authenticate": 'Bearer realm="api"'}
    if exc.status_code == 503:
        return {"Retry-After": "1"}
    return {}
