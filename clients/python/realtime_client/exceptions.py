"""Errors raised by the streaming clients.

Every error is a `ClientError`. Whether the client retries is decided by where an error sits::

    ClientError                        base of everything this package raises
    ├── TransportError                 the connection failed or dropped; the client retries these
    │   ├── ConnectFailed              no connection: refused, reset, handshake, HTTP 5xx/503, close 1013
    │   └── ConnectionLost             an open connection ended: close code, network, heartbeat silence
    ├── FatalError                     retrying cannot help; the client stops and reports it
    │   ├── AuthenticationFailed       WS close 4401, HTTP 401: missing, invalid or expired credentials
    │   ├── AccessDenied               WS close 4403, HTTP 403: origin, IP or channel not allowed
    │   └── Refused                    any other HTTP 4xx when opening a stream (e.g. 400 bad channel)
    ├── ReconnectFailed                max_reconnect_attempts attempts failed in a row
    ├── NotConnected                   a request was made while the client has no connection
    ├── ReplyError                     the server answered a request with an error reply (WS or HTTP)
    └── RequestTimeout                 no reply within request_timeout (also a TimeoutError)

`TransportError` and `FatalError` carry the WebSocket close code or HTTP status in `code`.
`ReplyError` carries the protocol's error `code` (`invalid_channel`, `forbidden`, …), its `detail`,
the per-field `fields` when the server gave them, and the HTTP `status` for HTTP replies.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every error raised by `realtime_client`."""


class TransportError(ClientError):
    """The connection failed or dropped; `code` is the close code or HTTP status when known."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(f"{reason} (code {code})" if code is not None else reason)


class ConnectFailed(TransportError):
    """An attempt to connect failed in a way that may succeed later."""

    def __init__(self, reason: str, code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason, code)
        self.retry_after = retry_after


class ConnectionLost(TransportError):
    """An open connection ended without the client asking for it."""


class FatalError(ClientError):
    """The server refused us in a way retrying cannot fix; the client stops reconnecting."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(f"{reason} (code {code})" if code is not None else reason)


class AuthenticationFailed(FatalError):
    """Credentials are missing, invalid or expired (WS close 4401, HTTP 401)."""


class AccessDenied(FatalError):
    """The origin, IP address or a requested channel is not allowed (WS close 4403, HTTP 403)."""


class Refused(FatalError):
    """The server refused to open a stream for a reason other than credentials (HTTP 4xx)."""


class ReconnectFailed(ClientError):
    """`max_reconnect_attempts` reconnection attempts failed in a row; `__cause__` is the last failure."""

    def __init__(self, attempts: int, last_error: ClientError) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(f"gave up after {attempts} reconnection attempts: {last_error}")


class NotConnected(ClientError):
    """A request needs an open connection and the client has none."""


class ReplyError(ClientError):
    """The server answered with an error: `{"type": code, "error": detail, "fields"?}`."""

    def __init__(self, code: str, detail: str, fields: dict[str, Any] | None = None, status: int | None = None) -> None:
        self.code = code
        self.detail = detail
        self.fields = fields
        self.status = status
        super().__init__(f"{code}: {detail}" + (f" {fields}" if fields else ""))

    @classmethod
    def from_body(cls, body: Any, status: int | None = None) -> ReplyError:
        """Build from the protocol's error shape; tolerate a body that is not that shape."""
        if isinstance(body, dict) and isinstance(body.get("type"), str):
            return cls(body["type"], str(body.get("error", "")), body.get("fields"), status)
        return cls("unknown_error", str(body)[:200], None, status)


class RequestTimeout(ClientError, TimeoutError):
    """No reply came within the request timeout."""


def describe(error: BaseException) -> str:
    """An exception's message, or its class name when it has none (`httpx.ReadError()` often has none)."""
    return str(error) or type(error).__name__
