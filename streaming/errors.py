"""The error hierarchy of the product.

Every failure a client can cause is a `StreamingError` subclass with a wire `code` (the `type`
of the error reply on WebSocket, the `type` of the JSON body over HTTP) and an HTTP status::

    StreamingError (internal_error, 500)
    ├── InvalidJSON (invalid_json, 400)
    ├── InvalidMessage (invalid_message, 400)
    ├── UnknownAction (unknown_action, 400)
    ├── InvalidChannel (invalid_channel, 400)
    ├── TooManySubscriptions (too_many_subscriptions, 400)
    ├── Unauthenticated (unauthenticated, 401)
    ├── Forbidden (forbidden, 403)
    ├── NotFound (not_found, 404)
    ├── MessageTooLarge (message_too_large, 413)
    ├── RateLimited (rate_limited, 429)
    └── Unavailable (unavailable, 503) — the bus, or as DatabaseUnavailable the database

They are raised anywhere and turned into the one error shape at the edge (consumer dispatch,
DRF exception handler, SSE view). Pure Python: nothing here imports Django.
"""

from __future__ import annotations

from typing import Any


class StreamingError(Exception):
    """Base of every error the product reports to a client."""

    code = "internal_error"
    status_code = 500
    default_detail = "Internal error."

    def __init__(self, detail: str | None = None, *, fields: dict[str, Any] | None = None) -> None:
        self.detail = detail or self.default_detail
        self.fields = fields
        super().__init__(self.detail)


class InvalidJSON(StreamingError):
    code = "invalid_json"
    status_code = 400
    default_detail = "The frame is not valid JSON."


class InvalidMessage(StreamingError):
    code = "invalid_message"
    status_code = 400
    default_detail = "The message does not match the protocol."


class UnknownAction(StreamingError):
    code = "unknown_action"
    status_code = 400
    default_detail = "Unknown action."


class InvalidChannel(StreamingError):
    code = "invalid_channel"
    status_code = 400
    default_detail = "Invalid channel name."


class TooManySubscriptions(StreamingError):
    code = "too_many_subscriptions"
    status_code = 400
    default_detail = "Too many subscriptions on this connection."


class Unauthenticated(StreamingError):
    code = "unauthenticated"
    status_code = 401
    default_detail = "Authentication credentials were not provided or are invalid."


class Forbidden(StreamingError):
    code = "forbidden"
    status_code = 403
    default_detail = "You are not allowed to do this."


class NotFound(StreamingError):
    code = "not_found"
    status_code = 404
    default_detail = "Not found."


class MessageTooLarge(StreamingError):
    code = "message_too_large"
    status_code = 413
    default_detail = "The message is too large."


class RateLimited(StreamingError):
    code = "rate_limited"
    status_code = 429
    default_detail = "Too many messages; slow down."


class Unavailable(StreamingError):
    code = "unavailable"
    status_code = 503
    default_detail = "The message bus is unavailable; try again."


class DatabaseUnavailable(Unavailable):
    """What the edges answer for Django's OperationalError/InterfaceError (database down or
    restarting): retryable like a bus outage, on WebSocket and over HTTP alike."""

    default_detail = "The database is unavailable; try again."
