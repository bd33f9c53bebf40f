"""Where the server is and how a client proves who it is: URLs and credential headers."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from realtime_client.exceptions import AccessDenied, AuthenticationFailed, ClientError, ConnectFailed, Refused

DEFAULT_API_KEY_HEADER = "X-API-Key"
RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass
class Endpoint:
    """A server address plus the credentials sent with every request and handshake.

    Credentials go in headers (`Authorization: Bearer`, the API-key header), never in the URL,
    so that they stay out of access logs and proxies' histories.
    """

    host: str = "localhost"
    port: int = 8000
    secure: bool = False
    token: str | None = None
    api_key: str | None = None
    api_key_header: str = DEFAULT_API_KEY_HEADER

    @classmethod
    def from_url(cls, url: str, **credentials: str | None) -> tuple[Endpoint, str]:
        """Parse `ws://host:port/path` or `http(s)://…`; returns the endpoint and the URL's path."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"expected a ws://, wss://, http:// or https:// URL, got {url!r}")
        secure = parts.scheme in ("wss", "https")
        port = parts.port or (443 if secure else 80)
        return cls(parts.hostname, port, secure, **credentials), parts.path.rstrip("/")

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.authority}{path}"

    def http_url(self, path: str) -> str:
        return f"{'https' if self.secure else 'http'}://{self.authority}{path}"

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.api_key:
            headers[self.api_key_header] = self.api_key
        return headers


def refusal_error(status: int, detail: str, retry_after: float | None = None) -> ClientError:
    """The error for an HTTP status that refused a connection (SSE stream or WS handshake)."""
    if status == 401:
        return AuthenticationFailed(detail, status)
    if status == 403:
        return AccessDenied(detail, status)
    if status >= 500 or status in RETRYABLE_STATUSES:
        return ConnectFailed(detail, status, retry_after)
    return Refused(detail, status)


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (the HTTP-date form is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
