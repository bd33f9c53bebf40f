"""Keeping credentials out of logs: a logging filter and daphne's access log, both redacting.

Tokens and API keys can reach a log line through a query string (`?token=`, `?api_key=`), an
`Authorization` header, the WebSocket subprotocol pair, or a JWT pasted into a message. Every
handler of the project and daphne's access log pass lines through `redact()`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from daphne.access import AccessLogGenerator
from django.views.debug import SafeExceptionReporterFilter

REDACTED = "[redacted]"

# Query parameters and form fields that carry credentials, by their decoded name: the server
# reads `?api%5Fkey=` as `api_key`, so the log must too.
CREDENTIAL_PARAMETER_NAMES = frozenset(
    {"token", "access_token", "api_key", "apikey", "key", "password", "refresh", "lasteventid"}
)


def _redact_parameter(match: re.Match) -> str:
    name = match.group(1)
    if unquote_plus(name).lower() in CREDENTIAL_PARAMETER_NAMES:
        return f"{name}={REDACTED}"
    return match.group(0)


_PATTERNS = [
    (re.compile(r"(?<![A-Za-z0-9%_.~-])([A-Za-z0-9%_.~+-]+)=([^&\s\"']+)"), _redact_parameter),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), lambda m: f"{m.group(1)} {REDACTED}"),
    (re.compile(r"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+"), lambda m: f"{m.group(1)}{REDACTED}"),
    # anything that looks like a JWT
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), lambda m: REDACTED),
]  # fmt: skip


_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@/\s]+)(@)")


def redact_url_passwords(text: str) -> str:
    """`postgres://user:secret@host/db` → `postgres://user:[redacted]@host/db`."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(3)}", text)


def redact(text: str) -> str:
    """Replace credentials in a log line with a marker."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecretsFilter(logging.Filter):
    """A logging filter that redacts the formatted message (and exception text) of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class RedactingAccessLog(AccessLogGenerator):
    """daphne's access log without query-string credentials."""

    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        super().write_entry(host, date, redact(request), status, length, ident, user)


class RedactingExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's debug-page filter, also hiding passwords inside URLs (DATABASE_URL, REDIS_URL,
    the channel layer's hosts) and reading the typed settings object field by field."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {item.name: getattr(value, item.name) for item in dataclasses.fields(value)}
        cleansed = super().cleanse_setting(key, value)
        return redact_url_passwords(cleansed) if isinstance(cleansed, str) else cleansed
