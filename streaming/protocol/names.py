"""Names and values of the protocol: channels, user ids, message types, close codes.

Patterns that guard input are applied with `fullmatch`. Pure Python, like the whole package.
"""

from __future__ import annotations

import hashlib
import re
from enum import IntEnum
from typing import Any

from streaming.errors import InvalidChannel, InvalidMessage

# Patterns that guard input are applied with `fullmatch`: `$` alone also matches before a final
# newline, and `"a" * 100 + "\n"` would pass (and overflow the 100-character subscription column).
CHANNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
EPOCH_RE = re.compile(r"^[A-Za-z0-9]{0,16}$")  # a stream epoch ("" while a channel has no history)
TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
MESSAGE_ID_MAX = 64
REQUEST_ID_MAX = 128
# A client's `content` nests at most this deep. orjson encodes 254 levels at most, and the
# deepest place content travels is a `history` reply (reply → content → messages → envelope →
# content: 4 levels above it); a deeper content would be accepted but then fail to encode.
CONTENT_DEPTH_MAX = 200

BROADCAST = "broadcast"
USER_PREFIX = "user:"
PRIVATE_PREFIX = "private-"
PRESENCE_PREFIX = "presence-"

DEFAULT_CLIENT_TYPE = "text"
DEFAULT_SERVER_TYPE = "message"
NOTIFICATION = "notification"
PRESENCE = "presence"
NOTIFICATION_LEVELS = ("info", "success", "warning", "error")

# Envelope types only the server may emit; clients publishing them get `forbidden`.
RESERVED_TYPES = frozenset(
    {
        "ack", "connected", "error", "heartbeat", "history", "pong", PRESENCE, "refreshed",
        "subscribed", "unsubscribed", NOTIFICATION, "stream-open", "stream-reset", "stream-error",
    }
)  # fmt: skip


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (README, "WebSocket protocol")."""

    NORMAL = 1000
    GOING_AWAY = 1001
    TRY_AGAIN_LATER = 1013
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    IDLE = 4408
    CLOSED_BY_ADMIN = 4409
    SLOW_CONSUMER = 4429


# ---------------------------------------------------------------------------------------------
# Channels


def validate_channel(channel: Any) -> str:
    """Return the channel name if it is valid, else raise InvalidChannel."""
    if not isinstance(channel, str) or not CHANNEL_RE.fullmatch(channel):
        raise InvalidChannel(
            "A channel name is 1-100 characters of A-Z a-z 0-9 _ . : @ - and starts with a letter or digit."
        )
    return channel


def channel_names(*lists: str) -> list[str]:
    """Channel names out of comma-separated lists (`?channels=a, b`), each validated, in order, once.

    Only spaces around a name are dropped: `news\n` is refused like any other invalid name.
    """
    names = (name.strip(" ") for value in lists for name in value.split(","))
    return list(dict.fromkeys(validate_channel(name) for name in names if name))


def validate_user_id(user_id: Any) -> str:
    """Return a user id as text if it is valid, else raise InvalidMessage."""
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id):
        raise InvalidMessage("user_id is 1-64 characters of A-Z a-z 0-9 _ . : @ -.", fields={"user_id": "invalid"})
    return user_id


def user_channel(user_id: str) -> str:
    """The personal channel of a user."""
    return f"{USER_PREFIX}{user_id}"


def channel_user_id(channel: str) -> str | None:
    """The user id of a personal channel, or None for any other channel."""
    return channel[len(USER_PREFIX) :] if channel.startswith(USER_PREFIX) else None


def is_presence_channel(channel: str) -> bool:
    return channel.startswith(PRESENCE_PREFIX)


def is_protected_channel(channel: str) -> bool:
    """Private and presence channels need a grant in the token's `channels` claim."""
    return channel.startswith(PRIVATE_PREFIX) or channel.startswith(PRESENCE_PREFIX)


def group_name(channel: str) -> str:
    """The channel-layer group of a channel: fixed length, valid for every layer, collision-free."""
    return "rt.ch." + hashlib.blake2b(channel.encode(), digest_size=16).hexdigest()


__all__ = [
    "BROADCAST",
    "CHANNEL_RE",
    "CONTENT_DEPTH_MAX",
    "DEFAULT_CLIENT_TYPE",
    "DEFAULT_SERVER_TYPE",
    "EPOCH_RE",
    "MESSAGE_ID_MAX",
    "NOTIFICATION",
    "NOTIFICATION_LEVELS",
    "PRESENCE",
    "PRESENCE_PREFIX",
    "PRIVATE_PREFIX",
    "REQUEST_ID_MAX",
    "RESERVED_TYPES",
    "TYPE_RE",
    "USER_ID_RE",
    "USER_PREFIX",
    "CloseCode",
    "channel_names",
    "channel_user_id",
    "group_name",
    "is_presence_channel",
    "is_protected_channel",
    "user_channel",
    "validate_channel",
    "validate_user_id",
]
