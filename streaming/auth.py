"""Who is connecting, and what they may do: credentials, identities and channel permissions.

One module resolves credentials for every transport (WS scope, SSE view, DRF): a JWT signed with
WS_JWT_SECRET_KEY (stateless: `sub` is the user id, `name`/`role`/`channels`/`subs` are kept), an API key
from WS_API_KEYS (compared in constant time), or a Django session user. A credential that is
present but invalid is always refused, whether or not the transport requires authentication.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from streaming import live, protocol
from streaming.errors import Forbidden, InvalidMessage, Unauthenticated
from streaming.namespaces import options

ACCESS_TOKEN_SUBPROTOCOL = "access_token"
VERIFIED_TOKENS_MAX = 10_000
ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class Identity:
    """The resolved identity of a connection or request."""

    kind: str  # "anonymous" | "jwt" | "api_key" | "session"
    user_id: str | None = None
    name: str | None = None
    role: str | None = None
    channels: tuple[str, ...] = ()
    expires_at: float | None = None
    subs: tuple[str, ...] = ()  # server-side subscriptions the token asks for (`subs` claim)
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_authenticated(self) -> bool:
        return self.kind != "anonymous"

    @property
    def is_admin(self) -> bool:
        return self.kind == "api_key" or self.role == ADMIN_ROLE

    @property
    def personal_channel(self) -> str | None:
        return protocol.user_channel(self.user_id) if self.user_id else None

    def grants(self, channel: str) -> bool:
        """True if the token's `channels` claim (fnmatch patterns) lists this channel."""
        return any(fnmatchcase(channel, pattern) for pattern in self.channels)


ANONYMOUS = Identity(kind="anonymous")


@dataclass(frozen=True)
class Credentials:
    """Raw credentials found on a request or a WebSocket handshake, not yet verified."""

    token: str | None = None
    api_key: str | None = None
    via_subprotocol: bool = False

    @property
    def present(self) -> bool:
        return self.token is not None or self.api_key is not None


class Authenticator:
    """Issues and verifies access tokens and API keys (`authenticator` is the shared instance)."""

    def create_access_token(self, claims: Mapping[str, Any], expires_minutes: int | None = None) -> str:
        """Sign an access token carrying `claims`; `sub` (the user id) is required."""
        if "sub" not in claims:
            raise ValueError("an access token needs a 'sub' claim (the user id)")
        token = AccessToken()
        if expires_minutes is not None:
            token.set_exp(lifetime=timedelta(minutes=expires_minutes))
        for key, value in claims.items():
            token[key] = str(value) if key == "sub" else value
        return str(token)

    def __init__(self) -> None:
        self._verified: OrderedDict[str, Identity] = OrderedDict()  # token → identity, until it expires
        self._verified_under: Any = None  # the settings they were verified under
        self._lock = threading.Lock()

    def verify_token(self, raw: str) -> Identity:
        """Verify an access token (signature, algorithm, expiry, type) and return its identity.

        A token verified before is not verified again until it expires: a backend publishing over
        HTTP with the same token pays for its signature once (VERIFIED_TOKENS_MAX remembered).
        """
        with self._lock:  # sync views verify on threads, connections on the loop
            if self._verified_under is not settings.REALTIME:  # new keys or settings: forget everything
                self._verified.clear()
                self._verified_under = settings.REALTIME
            identity = self._verified.get(raw)
            if identity is not None and identity.expires_at is not None and time.time() < identity.expires_at:
                self._verified.move_to_end(raw)
                return identity
        identity = self._verify_token(raw)
        if identity.expires_at is not None:
            with self._lock:
                self._verified[raw] = identity
                if len(self._verified) > VERIFIED_TOKENS_MAX:
                    self._verified.popitem(last=False)
        return identity

    def _verify_token(self, raw: str) -> Identity:
        try:
            token = AccessToken(raw)
            expires_at = float(token.payload["exp"]) if "exp" in token.payload else None
        except TokenError as error:
            reason = error.args[0] if error.args else "rejected"
            raise Unauthenticated(f"Invalid token: {reason}.") from None
        except (OverflowError, ValueError, OSError, TypeError):  # e.g. `exp: 1e300`: no datetime holds it
            raise Unauthenticated("Invalid token: its time claims are out of range.") from None
        claims = dict(token.payload)
        user_id = claims.get("sub")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        try:
            user_id = protocol.validate_user_id(user_id)
        except InvalidMessage:
            raise Unauthenticated("Invalid token: 'sub' must be a user id.") from None
        return Identity(
            kind="jwt",
            user_id=user_id,
            name=_text_claim(claims.get("name")),
            role=_text_claim(claims.get("role")),
            channels=_channels_claim(claims.get("channels")),
            expires_at=expires_at,
            subs=_channels_claim(claims.get("subs")),
            claims=claims,
        )

    def verify_api_key(self, raw: str) -> Identity:
        """Compare an API key with every configured key in constant time."""
        presented = _digest(raw.encode())
        matched = False
        for key_digest in _key_digests(settings.REALTIME.ws_api_keys):
            # compare_digest on equal-length digests: no early exit on length or content.
            matched |= hmac.compare_digest(presented, key_digest)
        if not matched:
            raise Unauthenticated("Invalid API key.")
        return Identity(kind="api_key", name="api-key", role=ADMIN_ROLE)

    def resolve(self, credentials: Credentials) -> Identity:
        """Verify whatever credentials are present; anonymous when there are none."""
        identity = ANONYMOUS
        if credentials.api_key is not None:
            identity = self.verify_api_key(credentials.api_key)
        if credentials.token is not None:
            identity = self.verify_token(credentials.token)
        return identity


authenticator = Authenticator()


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@functools.lru_cache(maxsize=8)
def _key_digests(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    """The digests of the configured API keys, computed once per configuration."""
    return tuple(_digest(key.encode()) for key in keys)


def _text_claim(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _channels_claim(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return ()
    return tuple(item.strip() for item in value if isinstance(item, str) and item.strip())


def identity_for_user(user: Any) -> Identity:
    """The identity of a logged-in Django user (session auth)."""
    return Identity(
        kind="session",
        user_id=str(user.pk),
        name=user.get_username(),
        role=ADMIN_ROLE if user.is_staff else "user",
    )


# ---------------------------------------------------------------------------------------------
# Where credentials come from


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return None


def credentials_from_scope(scope: Mapping[str, Any]) -> Credentials:
    """Credentials of an ASGI (WebSocket or HTTP) scope: query, headers, subprotocol pair."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
    api_key_header = settings.REALTIME.ws_api_key_header.lower()
    token = _first(query.get("token")) or _bearer(headers.get("authorization"))
    via_subprotocol = False
    subprotocols = list(scope.get("subprotocols") or ())
    if token is None and ACCESS_TOKEN_SUBPROTOCOL in subprotocols:
        position = subprotocols.index(ACCESS_TOKEN_SUBPROTOCOL)
        if position + 1 < len(subprotocols):
            token, via_subprotocol = subprotocols[position + 1], True
    api_key = _first(query.get("api_key")) or headers.get(api_key_header) or None
    return Credentials(token=token, api_key=api_key, via_subprotocol=via_subprotocol)


def credentials_from_request(request: Any) -> Credentials:
    """Credentials of a Django HTTP request: `?token=`, `?api_key=`, Bearer, the API-key header."""
    header = "HTTP_" + settings.REALTIME.ws_api_key_header.upper().replace("-", "_")
    token = request.GET.get("token") or _bearer(request.META.get("HTTP_AUTHORIZATION"))
    api_key = request.GET.get("api_key") or request.META.get(header) or None
    return Credentials(token=token or None, api_key=api_key)


def _first(values: Iterable[str] | None) -> str | None:
    for value in values or ():
        if value:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# Channel permissions (README, "Channels")


def subscribe_refusal(identity: Identity, channel: str) -> tuple[Forbidden | None, bool]:
    """Why the built-in rules refuse a subscription (None: they allow it), and whether an
    application's subscribe hook may allow it all the same (README, "Hooks"): it may for a
    protected channel the token does not list, never for another user's personal channel or a
    namespace closed to anonymous connections."""
    owner = protocol.channel_user_id(channel)
    if owner is not None:
        if owner != identity.user_id:
            return Forbidden("A personal channel is only for its own user."), False
        return None, False
    if not identity.is_authenticated and not options(channel).anonymous:
        return Forbidden(f"Channel {channel!r} is for authenticated connections only."), False
    if protocol.is_protected_channel(channel) and not _granted(identity, channel):
        return Forbidden(f"Channel {channel!r} needs a token whose 'channels' claim lists it."), True
    return None, False


def authorize_subscribe(identity: Identity, channel: str) -> None:
    """Raise Forbidden unless the built-in rules let the identity subscribe to (or read) the channel."""
    refused, _ = subscribe_refusal(identity, channel)
    if refused is not None:
        raise refused


def authorize_publish(identity: Identity, channel: str) -> None:
    """Raise Forbidden unless a client connection may publish to the channel."""
    if channel == protocol.BROADCAST:
        raise Forbidden("Only the server API publishes to 'broadcast'.")
    if not identity.is_admin and not options(channel).client_publish:
        if not settings.REALTIME.client_publish_enabled:
            raise Forbidden("Publishing from clients is disabled on this server.")
        raise Forbidden(f"Clients may not publish to channel {channel!r}.")
    if protocol.channel_user_id(channel) is not None:
        return  # the same as send_to_user: anyone may write to a user
    if not identity.is_admin and live.is_live_channel(channel):
        raise Forbidden(f"Channel {channel!r} carries a live model's changes: only the server publishes there.")
    if protocol.is_protected_channel(channel) and not _granted(identity, channel):
        raise Forbidden(f"Channel {channel!r} needs a token whose 'channels' claim lists it.")


def authorize_message_type(identity: Identity, message_type: str) -> None:
    """Clients may not impersonate server message types."""
    if message_type in protocol.RESERVED_TYPES and not identity.is_admin:
        raise Forbidden(f"Message type {message_type!r} is reserved for the server.")


def _granted(identity: Identity, channel: str) -> bool:
    return identity.is_admin or (identity.is_authenticated and identity.grants(channel))
