"""The one place where environment variables are read, parsed and validated.

`load_config(environ)` turns a mapping of strings into a frozen `Config`; a bad value raises
`ConfigError` whose message names the variable, the value and what was expected, so start-up
can stop with one readable line.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEV_JWT_SECRET_KEY = "dev-insecure-websocket-jwt-secret-change-me"
DEV_SECRET_KEY = "dev-insecure-django-secret-key-change-me"
JWT_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_PRODUCTION_KEY_BYTES = 32

# An ALLOWED_ORIGINS entry: `*`, an origin (scheme://host[:port]) or an ALLOWED_HOSTS-style host pattern.
_ORIGIN_RE = re.compile(r"^(\*|https?://[^/\s?#]+/?|\.?[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])$", re.IGNORECASE)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(Exception):
    """A setting has a value the server cannot run with."""

    def __init__(self, name: str, value: str | None, expected: str) -> None:
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"{name}={value!r}: expected {expected}")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A hook setting: a dotted path to a callable (`myapp.realtime.on_subscribe`).
_DOTTED_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
NAMESPACE_PATTERN_MAX = 100
NAMESPACES_MAX = 100


@dataclass(frozen=True)
class Namespace:
    """Options of the channels a pattern matches (README, "Channel namespaces"); None: the global value."""

    pattern: str  # fnmatch, case-sensitive; the first matching namespace wins
    history_size: int | None = None
    history_ttl: int | None = None
    presence: bool | None = None
    join_leave: bool | None = None
    client_publish: bool | None = None
    anonymous: bool | None = None
    recover: bool | None = None


# Each namespace option: its check, and what a bad value is told it should be.
_NAMESPACE_OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "history_size": (lambda v: type(v) is int and 0 <= v <= 1_000_000, "an integer from 0 to 1000000"),
    "history_ttl": (lambda v: type(v) is int and 1 <= v <= 10 * 365 * 86400, "an integer of seconds >= 1"),
    "presence": (lambda v: type(v) is bool, "true or false"),
    "join_leave": (lambda v: type(v) is bool, "true or false"),
    "client_publish": (lambda v: type(v) is bool, "true or false"),
    "anonymous": (lambda v: type(v) is bool, "true or false"),
    "recover": (lambda v: type(v) is bool, "true or false"),
}


def parse_namespaces(value: Any, name: str = "CHANNEL_NAMESPACES") -> tuple[Namespace, ...]:
    """Namespaces out of a JSON object `{pattern: {option: value}}` (parsed or as text), in order.

    Raises ConfigError naming the pattern and option at fault."""
    raw = value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(name, raw, "a JSON object of channel patterns to options") from None
    if not isinstance(value, dict):
        raise ConfigError(name, raw, "a JSON object of channel patterns to options")
    if len(value) > NAMESPACES_MAX:
        raise ConfigError(name, raw, f"at most {NAMESPACES_MAX} namespaces")
    namespaces = []
    for pattern, options in value.items():
        if not pattern or len(pattern) > NAMESPACE_PATTERN_MAX or any(c.isspace() for c in pattern):
            raise ConfigError(name, raw, f"patterns of 1-{NAMESPACE_PATTERN_MAX} characters without spaces")
        if not isinstance(options, dict):
            raise ConfigError(name, raw, f"{pattern!r} to map to an object of options")
        for option, option_value in options.items():
            known = _NAMESPACE_OPTIONS.get(option)
            if known is None:
                raise ConfigError(
                    name,
                    raw,
                    f"{pattern!r} to use only the options " + ", ".join(_NAMESPACE_OPTIONS) + f" (not {option!r})",
                )
            check, expected = known
            if not check(option_value):
                raise ConfigError(name, raw, f"{pattern!r} {option} to be {expected}")
        namespaces.append(Namespace(pattern=pattern, **options))
    return tuple(namespaces)


@dataclass(frozen=True)
class Config:
    """Every setting of the server, typed. Field names are the variable names in lower case."""

    django_secret_key: str = field(repr=False)
    django_debug: bool
    django_allowed_hosts: tuple[str, ...]
    database_url: str = field(repr=False)  # may hold a password
    redis_urls: tuple[str, ...] = field(repr=False)  # one or more Redis servers; channels are sharded over them
    log_level: str
    server_event_loop: str

    websocket_enabled: bool
    sse_enabled: bool
    websocket_auth_required: bool
    sse_auth_required: bool
    api_auth_required: bool

    websocket_heartbeat_interval: float
    websocket_disconnect_timeout: float
    websocket_max_connections: int
    websocket_message_queue_size: int
    websocket_max_message_size: int
    slow_consumer_timeout: float

    sse_heartbeat_interval: float
    sse_max_connections: int
    sse_retry_timeout: int
    sse_max_message_size: int

    ws_jwt_secret_key: str = field(repr=False)
    ws_jwt_algorithm: str
    ws_jwt_expire_minutes: int
    ws_api_key_header: str
    ws_api_keys: tuple[str, ...] = field(repr=False)

    allowed_origins: tuple[str, ...]
    allowed_ips: tuple[Network, ...]
    trusted_proxies: tuple[Network, ...]
    max_subscriptions_per_connection: int
    max_connections_per_user: int
    max_connections_per_ip: int
    client_rate_limit: float
    client_rate_burst: int
    client_publish_enabled: bool
    channel_history_size: int
    channel_history_ttl: int
    history_page_max_bytes: int
    publish_idempotency_window: float
    publish_batch_max_items: int
    publish_batch_max_bytes: int
    publish_idempotency_keys: int
    closed_connection_retention: int
    registry_flush_interval: float
    channel_namespaces: tuple[Namespace, ...] = ()
    realtime_connect_hook: str = ""
    realtime_subscribe_hook: str = ""
    realtime_publish_hook: str = ""
    realtime_hook_timeout: float = 3.0
    live_snapshot_max_items: int = 100
    reliability_echo_route: bool = False  # test-only `/ws/echo` for conformance runs

    @property
    def uses_dev_jwt_key(self) -> bool:
        return self.ws_jwt_secret_key == DEV_JWT_SECRET_KEY

    @property
    def liveness_window(self) -> float:
        """Seconds after which a silent server process counts as dead (its connections reaped)."""
        return self.websocket_disconnect_timeout or 60.0


class _Reader:
    """Reads typed values out of an environment mapping, raising ConfigError on bad input."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _parse(self, name: str, default: Any, parse: Callable[[str], Any], expected: str) -> Any:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (ValueError, TypeError):
            raise ConfigError(name, self.environ.get(name), expected) from None

    def string(self, name: str, default: str) -> str:
        return self._parse(name, default, str, "a string")

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)

        return self._parse(name, default, parse, "a boolean (true/false, 1/0, yes/no, on/off)")

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if value < minimum:
                raise ValueError(raw)
            return value

        return self._parse(name, default, parse, f"an integer >= {minimum}")

    def number(self, name: str, default: float, minimum: float = 0, strict: bool = False) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(raw)
            if value < minimum or (strict and value == minimum):
                raise ValueError(raw)
            return value

        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        return self._parse(name, default, parse, f"a number of seconds {bound}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            if raw not in choices:
                raise ValueError(raw)
            return raw

        return self._parse(name, default, parse, "one of " + ", ".join(choices))

    def items(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        return self._parse(name, default, _split_list, "a comma-separated list")

    def origins(self, name: str) -> tuple[str, ...]:
        def parse(raw: str) -> tuple[str, ...]:
            items = _split_list(raw)
            if not all(_ORIGIN_RE.fullmatch(item) for item in items):
                raise ValueError(raw)
            return items

        return self._parse(name, (), parse, "a comma-separated list of origins (https://host[:port]) or host names")

    def networks(self, name: str) -> tuple[Network, ...]:
        def parse(raw: str) -> tuple[Network, ...]:
            return tuple(ipaddress.ip_network(item, strict=False) for item in _split_list(raw))

        return self._parse(name, (), parse, "a comma-separated list of IP addresses or CIDR networks")

    def urls(self, name: str, schemes: tuple[str, ...]) -> tuple[str, ...]:
        """A comma-separated list of URLs, each with one of `schemes` (empty: none)."""

        def parse(raw: str) -> tuple[str, ...]:
            items = _split_list(raw)
            for item in items:
                scheme, sep, rest = item.partition("://")
                if not sep or scheme.lower() not in schemes or not rest:
                    raise ValueError(raw)
            if len(set(items)) != len(items):
                raise ValueError(raw)
            return items

        return self._parse(name, (), parse, "comma-separated distinct URLs with scheme " + " or ".join(schemes))

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            scheme, sep, rest = raw.partition("://")
            if not sep or scheme.lower() not in schemes or not rest:
                raise ValueError(raw)
            return raw

        return self._parse(name, default, parse, "a URL with scheme " + " or ".join(schemes))

    def dotted_path(self, name: str) -> str:
        def parse(raw: str) -> str:
            if not _DOTTED_RE.fullmatch(raw):
                raise ValueError(raw)
            return raw

        return self._parse(name, "", parse, "a dotted path to a callable (package.module.function)")

    def namespaces(self, name: str) -> tuple[Namespace, ...]:
        raw = self.raw(name)
        return () if raw is None else parse_namespaces(raw, name)


def _split_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Parse and validate every setting. Raises ConfigError for the first bad value."""
    env = _Reader(os.environ if environ is None else environ)
    debug = env.boolean("DJANGO_DEBUG", False)
    websocket_auth = env.boolean("WEBSOCKET_AUTH_REQUIRED", False)
    sse_auth = env.boolean("SSE_AUTH_REQUIRED", False)
    hosts = env.items("DJANGO_ALLOWED_HOSTS", ("localhost", "127.0.0.1", "[::1]"))
    rate = env.number("CLIENT_RATE_LIMIT", 50.0)
    config = Config(
        django_secret_key=env.string("DJANGO_SECRET_KEY", DEV_SECRET_KEY),
        django_debug=debug,
        django_allowed_hosts=hosts,
        database_url=env.url("DATABASE_URL", "sqlite:///db.sqlite3", ("sqlite", "postgres", "postgresql", "pgsql")),
        redis_urls=env.urls("REDIS_URL", ("redis", "rediss", "unix")),
        log_level=env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        server_event_loop=env.choice("SERVER_EVENT_LOOP", "uvloop", ("uvloop", "asyncio")),
        websocket_enabled=env.boolean("WEBSOCKET_ENABLED", True),
        sse_enabled=env.boolean("SSE_ENABLED", True),
        websocket_auth_required=websocket_auth,
        sse_auth_required=sse_auth,
        api_auth_required=env.boolean("API_AUTH_REQUIRED", websocket_auth or sse_auth),
        websocket_heartbeat_interval=env.number("WEBSOCKET_HEARTBEAT_INTERVAL", 30, strict=True),
        websocket_disconnect_timeout=env.number("WEBSOCKET_DISCONNECT_TIMEOUT", 60),
        websocket_max_connections=env.integer("WEBSOCKET_MAX_CONNECTIONS", 1000, minimum=1),
        websocket_message_queue_size=env.integer("WEBSOCKET_MESSAGE_QUEUE_SIZE", 100, minimum=1),
        websocket_max_message_size=env.integer("WEBSOCKET_MAX_MESSAGE_SIZE", 65536, minimum=256),
        slow_consumer_timeout=env.number("SLOW_CONSUMER_TIMEOUT", 10, strict=True),
        sse_heartbeat_interval=env.number("SSE_HEARTBEAT_INTERVAL", 30, strict=True),
        sse_max_connections=env.integer("SSE_MAX_CONNECTIONS", 500, minimum=1),
        sse_retry_timeout=env.integer("SSE_RETRY_TIMEOUT", 3000, minimum=0),
        sse_max_message_size=env.integer("SSE_MAX_MESSAGE_SIZE", 1048576, minimum=256),
        ws_jwt_secret_key=env.string("WS_JWT_SECRET_KEY", DEV_JWT_SECRET_KEY),
        ws_jwt_algorithm=env.choice("WS_JWT_ALGORITHM", "HS256", JWT_ALGORITHMS),
        ws_jwt_expire_minutes=env.integer("WS_JWT_EXPIRE_MINUTES", 60, minimum=1),
        ws_api_key_header=env.string("WS_API_KEY_HEADER", "X-API-Key"),
        ws_api_keys=env.items("WS_API_KEYS"),
        allowed_origins=env.origins("ALLOWED_ORIGINS"),
        allowed_ips=env.networks("ALLOWED_IPS"),
        trusted_proxies=env.networks("TRUSTED_PROXIES"),
        max_subscriptions_per_connection=env.integer("MAX_SUBSCRIPTIONS_PER_CONNECTION", 100, minimum=1),
        max_connections_per_user=env.integer("MAX_CONNECTIONS_PER_USER", 100, minimum=0),
        max_connections_per_ip=env.integer("MAX_CONNECTIONS_PER_IP", 250, minimum=0),
        client_rate_limit=rate,
        client_rate_burst=env.integer("CLIENT_RATE_BURST", max(1, int(rate * 2)), minimum=1),
        client_publish_enabled=env.boolean("CLIENT_PUBLISH_ENABLED", True),
        channel_history_size=env.integer("CHANNEL_HISTORY_SIZE", 100, minimum=0),
        channel_history_ttl=env.integer("CHANNEL_HISTORY_TTL", 86400, minimum=1),
        history_page_max_bytes=env.integer("HISTORY_PAGE_MAX_BYTES", 1048576, minimum=1024),
        publish_idempotency_window=env.number("PUBLISH_IDEMPOTENCY_WINDOW", 120),
        publish_batch_max_items=env.integer("PUBLISH_BATCH_MAX_ITEMS", 1000, minimum=1),
        publish_batch_max_bytes=env.integer("PUBLISH_BATCH_MAX_BYTES", 4 * 1048576, minimum=1024),
        publish_idempotency_keys=env.integer("PUBLISH_IDEMPOTENCY_KEYS", 100_000, minimum=1),
        closed_connection_retention=env.integer("CLOSED_CONNECTION_RETENTION", 86400, minimum=0),
        registry_flush_interval=env.number("REGISTRY_FLUSH_INTERVAL", 1.0, strict=True),
        channel_namespaces=env.namespaces("CHANNEL_NAMESPACES"),
        realtime_connect_hook=env.dotted_path("REALTIME_CONNECT_HOOK"),
        realtime_subscribe_hook=env.dotted_path("REALTIME_SUBSCRIBE_HOOK"),
        realtime_publish_hook=env.dotted_path("REALTIME_PUBLISH_HOOK"),
        realtime_hook_timeout=env.number("REALTIME_HOOK_TIMEOUT", 3.0, strict=True),
        live_snapshot_max_items=env.integer("LIVE_SNAPSHOT_MAX_ITEMS", 100, minimum=1),
        reliability_echo_route=env.boolean("RELIABILITY_ECHO_ROUTE", False),
    )
    _check_header_name(config.ws_api_key_header, env)
    if not debug:
        _check_production(config, env)
    return config


def _check_header_name(header: str, env: _Reader) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
    if not header or set(header) - allowed:
        raise ConfigError("WS_API_KEY_HEADER", env.raw("WS_API_KEY_HEADER"), "an HTTP header name")


def _check_production(config: Config, env: _Reader) -> None:
    """With DJANGO_DEBUG=false, refuse the development keys and short JWT keys."""
    if env.raw("DJANGO_SECRET_KEY") is None:
        raise ConfigError("DJANGO_SECRET_KEY", None, "a secret key when DJANGO_DEBUG=false")
    if config.django_secret_key == DEV_SECRET_KEY:
        raise ConfigError("DJANGO_SECRET_KEY", "<development key>", "your own key when DJANGO_DEBUG=false")
    if config.uses_dev_jwt_key:
        raise ConfigError("WS_JWT_SECRET_KEY", "<development key>", "your own key when DJANGO_DEBUG=false")
    if len(config.ws_jwt_secret_key.encode()) < MIN_PRODUCTION_KEY_BYTES:
        raise ConfigError(
            "WS_JWT_SECRET_KEY",
            "<redacted>",
            f"at least {MIN_PRODUCTION_KEY_BYTES} bytes when DJANGO_DEBUG=false",
        )


def production_warnings(config: Config) -> list[str]:
    """Settings that start, but that production (DJANGO_DEBUG=false) should not run with."""
    if config.django_debug:
        return []
    warnings = []
    if not (config.websocket_auth_required or config.sse_auth_required or config.api_auth_required):
        warnings.append(
            "DJANGO_DEBUG=false with WEBSOCKET_AUTH_REQUIRED, SSE_AUTH_REQUIRED and API_AUTH_REQUIRED all false: "
            "anyone may connect, publish to public channels from a WebSocket, and publish to any channel "
            "(personal ones and broadcast included) through the HTTP API"
        )
    else:
        if not config.api_auth_required:
            warnings.append(
                "API_AUTH_REQUIRED=false: anyone who reaches the server may publish to any channel (personal ones "
                "and broadcast included) through the HTTP API; live connections stay for admins"
            )
        if not config.websocket_auth_required and config.client_publish_enabled:
            warnings.append(
                "WEBSOCKET_AUTH_REQUIRED=false with CLIENT_PUBLISH_ENABLED=true: anonymous WebSocket clients may "
                "publish to public channels and to users' personal channels"
            )
    if any(network.prefixlen == 0 for network in config.trusted_proxies):
        warnings.append(
            "TRUSTED_PROXIES trusts every address: any client can pick its IP with X-Forwarded-For "
            "(list only your proxies' networks)"
        )
    return warnings
