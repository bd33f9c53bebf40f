"""Wire formats: the message envelope, client frames and their schemas, replies, close codes.

Every JSON shape the server emits is built here and nowhere else. Pure Python: nothing here
imports Django, so the shapes can be read (and reused by tests) without a configured project.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import orjson

from streaming.errors import InvalidChannel, InvalidJSON, InvalidMessage, UnknownAction

# Patterns that guard input are applied with `fullmatch`: `$` alone also matches before a final
# newline, and `"a" * 100 + "\n"` would pass (and overflow the 100-character subscription column).
CHANNEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
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
# Encoding


def encode(payload: Any) -> str:
    """Serialize a JSON payload to text (the one encoder of the server)."""
    try:
        return orjson.dumps(payload).decode()
    except orjson.JSONEncodeError as error:  # e.g. nested deeper than orjson's 254 levels
        raise InvalidMessage(f"The message cannot be encoded as JSON: {error}.") from None


def check_content(value: Any) -> Any:
    """Return a message's content if it nests at most CONTENT_DEPTH_MAX deep, else raise ValueError."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > CONTENT_DEPTH_MAX:
            raise ValueError(f"JSON nested at most {CONTENT_DEPTH_MAX} levels deep")
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return value


def decode(text: str | bytes) -> Any:
    """Parse JSON text; deep nesting, surrogates and non-finite numbers raise InvalidJSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidJSON(f"The frame is not valid JSON: {error.msg}.") from None


def now_iso() -> str:
    """The current time as ISO-8601 UTC with a `Z` suffix."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


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


# ---------------------------------------------------------------------------------------------
# Outbound shapes


def sender(user_id: str | None, connection_id: str | None) -> dict[str, Any]:
    return {"user_id": user_id, "connection_id": connection_id}


def envelope(
    *,
    type: str,
    channel: str | None,
    content: Any,
    sender: dict[str, Any] | None = None,
    offset: int | None = None,
    id: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The one envelope of every delivered message, on both transports (README, "WebSocket protocol")."""
    return {
        "id": id or new_id(),
        "type": type,
        "channel": channel,
        "content": content,
        "sender": sender,
        "timestamp": timestamp or now_iso(),
        "offset": offset,
    }


def bus_message(channel: str, text: str, offset: int | None, event: str) -> dict[str, Any]:
    """What the bus carries for one publish: the encoded envelope plus what routing needs.

    `event` is the envelope's type (the SSE event name), so no subscriber has to decode `text`.
    Subscribers may cache derived encodings in it (`ws`, `sse`, `sse_chunk`); see `hub.py`.
    """
    return {"type": "hub.publish", "channel": channel, "offset": offset, "event": event, "text": text,
            "sent_at": time.time()}  # fmt: skip


def notification_content(*, title: str, content: Any, level: str, auto_hide: bool, duration: int) -> dict[str, Any]:
    """The `content` of a `notification` envelope."""
    return {
        "title": title,
        "content": content,
        "type": level,
        "auto_hide": auto_hide,
        "duration": duration,
    }


def presence_content(*, event: str, user_id: str | None, connection_id: str) -> dict[str, Any]:
    """The `content` of a presence join/leave envelope on a `presence-*` channel."""
    return {"event": event, "user_id": user_id, "connection_id": connection_id}


def reply(type: str, content: Any = None, request_id: Any = None) -> dict[str, Any]:
    """A reply to a client frame; carries the frame's request_id back when it had one."""
    frame: dict[str, Any] = {"type": type, "content": content}
    if request_id is not None:
        frame["request_id"] = request_id
    return frame


def error_body(code: str, detail: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error shape: the `content` of a WS error reply and the body of an HTTP error."""
    body: dict[str, Any] = {"type": code, "error": detail}
    if fields:
        body["fields"] = fields
    return body


def error_reply(code: str, detail: str, request_id: Any = None, fields: Any = None) -> dict:
    return reply("error", error_body(code, detail, fields), request_id)


def connected(*, connection_id: str, user_id: str | None, heartbeat_interval: float) -> dict:
    """The greeting sent once a WebSocket is accepted."""
    interval = int(heartbeat_interval) if float(heartbeat_interval).is_integer() else heartbeat_interval
    return {
        "type": "connected",
        "data": {
            "connection_id": connection_id,
            "user_id": user_id,
            "heartbeat_interval": interval,
        },
    }


def heartbeat(timestamp: str | None = None) -> dict[str, Any]:
    return {"type": "heartbeat", "timestamp": timestamp or now_iso()}


# ---------------------------------------------------------------------------------------------
# Client frames


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an action's `data`: its check, and whether it must be present."""

    check: Callable[[Any], Any]
    required: bool = False


def _channel(value: Any) -> str:
    return validate_channel(value)


def _offset(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ValueError("a non-negative integer offset")
    return value


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValueError("an integer from 1 to 1000")
    return value


def _message_type(value: Any) -> str:
    if not isinstance(value, str) or not TYPE_RE.fullmatch(value):
        raise ValueError("1-64 characters of A-Z a-z 0-9 _ . : -, starting with a letter or digit")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _token(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 8192:
        raise ValueError("a token string")
    return value


def _user_id(value: Any) -> str:
    return validate_user_id(value)


ACTIONS: dict[str, dict[str, Field]] = {
    "ping": {},
    "pong": {},
    "subscribe": {"channel": Field(_channel, True), "since": Field(_offset)},
    "unsubscribe": {"channel": Field(_channel, True)},
    "send_to_channel": {
        "channel": Field(_channel, True),
        "content": Field(check_content, True),
        "type": Field(_message_type),
        "persist": Field(_boolean),
    },
    "send_to_user": {
        "user_id": Field(_user_id, True),
        "content": Field(check_content, True),
        "type": Field(_message_type),
    },
    "message": {"content": Field(check_content, True)},
    "history": {"channel": Field(_channel, True), "since": Field(_offset), "limit": Field(_limit)},
    "presence": {"channel": Field(_channel, True)},
    "refresh": {"token": Field(_token, True)},
}

FRAME_KEYS = frozenset({"action", "data", "request_id"})


@dataclass(frozen=True, slots=True)
class Frame:
    """A validated client frame."""

    action: str
    data: dict[str, Any]
    request_id: Any = None


def request_id_of(payload: Any) -> Any:
    """The frame's request_id if it is usable, so that even an error reply can carry it."""
    if not isinstance(payload, dict):
        return None
    request_id = payload.get("request_id")
    if isinstance(request_id, bool):
        return None
    if isinstance(request_id, int) and abs(request_id) < 2**53:
        return request_id
    if isinstance(request_id, str) and len(request_id) <= REQUEST_ID_MAX:
        return request_id
    return None


def parse_frame(payload: Any) -> Frame:
    """Validate a decoded client frame against the action schemas; raise a typed error."""
    if not isinstance(payload, dict):
        raise InvalidMessage("A frame is a JSON object with an `action`.")
    unknown = set(payload) - FRAME_KEYS
    if unknown:
        raise InvalidMessage(
            "Unknown frame keys: " + ", ".join(sorted(map(str, unknown))) + ".",
            fields={key: "unknown field" for key in sorted(unknown)},
        )
    if "request_id" in payload and request_id_of(payload) is None:
        raise InvalidMessage(
            f"request_id is a string of at most {REQUEST_ID_MAX} characters or an integer.",
            fields={"request_id": "invalid"},
        )
    action = payload.get("action")
    if not isinstance(action, str):
        raise InvalidMessage("`action` is required and must be a string.", fields={"action": "required"})
    schema = ACTIONS.get(action)
    if schema is None:
        raise UnknownAction(f"Unknown action {action[:64]!r}.")
    data = payload.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidMessage("`data` must be a JSON object.", fields={"data": "not an object"})
    return Frame(action, _validate_data(schema, data), payload.get("request_id"))


def _validate_data(schema: dict[str, Field], data: dict[str, Any]) -> dict[str, Any]:
    problems: dict[str, str] = {}
    for key in data:
        if key not in schema:
            problems[str(key)[:64]] = "unknown field"
    clean: dict[str, Any] = {}
    for key, field in schema.items():
        if key not in data:
            if field.required:
                problems[key] = "required"
            continue
        try:
            clean[key] = field.check(data[key])
        except InvalidChannel:
            raise
        except (ValueError, InvalidMessage) as error:
            problems[key] = str(error.args[0]) if error.args else "invalid"
    if problems:
        detail = "; ".join(f"{key}: {problem}" for key, problem in problems.items())
        raise InvalidMessage(f"Invalid data: {detail}.", fields=problems)
    return clean
