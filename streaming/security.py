"""Network-level admission for WebSocket and SSE: client IP, IP allowlist, Origin check.

`X-Forwarded-For` is honoured only when the direct peer is in TRUSTED_PROXIES; the client is then
the right-most address that is not itself a trusted proxy. A request without an `Origin` header
is allowed (non-browser clients send none); a browser's Origin must match ALLOWED_ORIGINS, or
when that is empty, ALLOWED_HOSTS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def _in(address: Any, networks: tuple) -> bool:
    return address is not None and any(address in network for network in networks)


def client_ip(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client address, trusting X-Forwarded-For only from TRUSTED_PROXIES."""
    trusted = settings.REALTIME.trusted_proxies
    address = _ip(peer)
    if forwarded_for and _in(address, trusted):
        for hop in reversed(forwarded_for.split(",")):
            hop_address = _ip(hop)
            if hop_address is None:
                break
            address = hop_address
            if not _in(hop_address, trusted):
                break
    return str(address) if address is not None else peer


def ip_allowed(ip: str | None) -> bool:
    allowed = settings.REALTIME.allowed_ips
    return not allowed or _in(_ip(ip), allowed)


def origin_allowed(origin: str | None) -> bool:
    """True for no Origin (non-browser clients) or an Origin matching the allowed list."""
    if origin is None:
        return True
    config = settings.REALTIME
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if not _is_bare_origin(origin, parts):
        return False  # userinfo, a path, a query, or a host urlsplit reads only in part
    # ALLOWED_HOSTS spells IPv6 hosts as in a Host header, in brackets; urlsplit drops them.
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if config.allowed_origins:
        normalized = f"{parts.scheme}://{parts.netloc}".lower()
        patterns = [p.lower().rstrip("/") for p in config.allowed_origins]
        if "*" in patterns or normalized in patterns:
            return True
        host_patterns = [p for p in patterns if "://" not in p]
        return validate_host(host, host_patterns)
    return validate_host(host, list(config.django_allowed_hosts))


def _is_bare_origin(origin: str, parts: Any) -> bool:
    """An Origin is exactly `scheme://host[:port]`: rebuilt from what urlsplit parsed, it must
    give back the header (so `http://[::1].evil.example`, read as host `::1`, is refused)."""
    try:
        port = parts.port
    except ValueError:
        return False
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    rebuilt = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    return rebuilt == origin.lower()


def scope_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}


def scope_client_ip(scope: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
    peer = (scope.get("client") or (None,))[0]
    return client_ip(peer, headers.get("x-forwarded-for"))


def refusal(ip: str | None, origin: str | None) -> str | None:
    """Why a connection from this IP with this Origin is refused (None when admitted)."""
    if not ip_allowed(ip):
        return "IP address not allowed"
    if not origin_allowed(origin):
        return "origin not allowed"
    return None
