"""The DRF exception handler: DRF's own, with every error body reshaped into the one error shape.

DRF's handler maps Django's 404 and PermissionDenied, sets `WWW-Authenticate` / `Retry-After`
and rolls back the request's transaction; this one adds our typed errors and the body
`{"type": CODE, "error": "…", "fields"?: {…}}` of `protocol.error_body`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from streaming import protocol
from streaming.errors import DatabaseUnavailable, MessageTooLarge, StreamingError

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


class _TypedError(exceptions.APIException):
    """A StreamingError handed through DRF's handler (status, rollback), keeping its code and fields."""

    def __init__(self, error: StreamingError) -> None:
        super().__init__(error.detail)
        self.status_code = error.status_code
        self.error = error
        if error.status_code == 401:
            self.auth_header = 'Bearer realm="api"'
        if error.status_code == 503:
            self.wait = 1


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable for %s: %s", context["request"].path, exc)
        exc = DatabaseUnavailable()
    elif isinstance(exc, RequestDataTooBig):
        exc = MessageTooLarge("The request body is too large.")
    if isinstance(exc, StreamingError):
        exc = _TypedError(exc)
    response = drf_exception_handler(exc, context)
    if response is not None:
        response.data = _error_body(exc, response.data)
    return response


def _error_body(exc: Exception, data: Any) -> dict[str, Any]:
    if isinstance(exc, _TypedError):
        return protocol.error_body(exc.error.code, exc.error.detail, exc.error.fields)
    code = next((code for kind, code in _DRF_CODES if isinstance(exc, kind)), "error")
    if isinstance(exc, exceptions.ValidationError):
        if "invalid_channel" in _leaf_codes(exc.get_codes()):
            code = "invalid_channel"  # the same code as on WebSocket and /sse/connect
        return protocol.error_body(code, "The request body is invalid.", _fields(data))
    return protocol.error_body(code, _message(data))


def _message(data: Any) -> str:
    """The human message of a DRF error body: `{"detail": …}`, or simplejwt's
    `{"detail": …, "code": …, "messages": [...]}`."""
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    if isinstance(data, list) and data:
        return str(data[0])
    return str(data)


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
