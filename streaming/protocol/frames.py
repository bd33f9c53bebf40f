"""Client frames: the schema of each action's `data`, and their validation.

Each check has its JSON Schema beside it (`SCHEMAS`), built from the same patterns and limits, and
`frame_schema` is the JSON Schema of a whole frame: the AsyncAPI document of the protocol
(`streaming/asyncapi.py`, `/api/asyncapi/`) is made from them, so it describes what `parse_frame`
accepts. `parse_frame` itself never reads a schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streaming.errors import InvalidChannel, InvalidMessage, UnknownAction
from streaming.protocol.names import (
    CHANNEL_RE,
    CONTENT_DEPTH_MAX,
    EPOCH_RE,
    MESSAGE_ID_MAX,
    REQUEST_ID_MAX,
    TYPE_RE,
    USER_ID_RE,
    validate_channel,
    validate_user_id,
)
from streaming.protocol.shapes import check_content

# ---------------------------------------------------------------------------------------------
# Client frames


OFFSET_MAX = 2**63 - 1  # offsets are 64-bit signed integers in the database
HISTORY_LIMIT_MAX = 1000  # messages in one `history` reply
TOKEN_MAX = 8192  # characters of a token sent with `refresh`
REQUEST_ID_INT_MAX = 2**53 - 1  # an integer request_id must survive a JavaScript number


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an action's `data`: its check, and whether it must be present."""

    check: Callable[[Any], Any]
    required: bool = False

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema of what the check accepts (`SCHEMAS`)."""
        return dict(SCHEMAS[self.check])


def _channel(value: Any) -> str:
    return validate_channel(value)


def _offset(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= OFFSET_MAX:
        raise ValueError("a non-negative integer offset")
    return value


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= HISTORY_LIMIT_MAX:
        raise ValueError(f"an integer from 1 to {HISTORY_LIMIT_MAX}")
    return value


def _message_type(value: Any) -> str:
    if not isinstance(value, str) or not TYPE_RE.fullmatch(value):
        raise ValueError("1-64 characters of A-Z a-z 0-9 _ . : -, starting with a letter or digit")
    return value


def _epoch(value: Any) -> str:
    if not isinstance(value, str) or not EPOCH_RE.fullmatch(value):
        raise ValueError("an epoch: up to 16 letters and digits")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _token(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= TOKEN_MAX:
        raise ValueError("a token string")
    return value


def _user_id(value: Any) -> str:
    return validate_user_id(value)


def _message_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MESSAGE_ID_MAX or "\x00" in value:
        raise ValueError(f"a string of 1-{MESSAGE_ID_MAX} characters")
    return value


def _string(pattern: str, description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": pattern, "description": description}


# What each check accepts, as JSON Schema. One difference JSON Schema cannot express: its
# `integer` includes numbers written with a fraction part (`1.0`), which the checks refuse.
CHANNEL_SCHEMA = _string(
    CHANNEL_RE.pattern, "A channel name: 1-100 characters of A-Z a-z 0-9 _ . : @ -, starting with a letter or digit."
)
EPOCH_SCHEMA = _string(
    EPOCH_RE.pattern, "A stream epoch: up to 16 letters and digits (empty while a channel has none)."
)
TYPE_SCHEMA = _string(TYPE_RE.pattern, "A message type: 1-64 characters of A-Z a-z 0-9 _ . : -.")
USER_ID_SCHEMA = {
    "oneOf": [
        _string(USER_ID_RE.pattern, "1-64 characters of A-Z a-z 0-9 _ . : @ -."),
        {"type": "integer", "description": "An integer user id, read as its decimal text."},
    ]
}
REQUEST_ID_SCHEMA = {
    "description": "Carried back in the reply (and in an error reply) to this frame.",
    "oneOf": [
        {"type": "string", "maxLength": REQUEST_ID_MAX},
        {"type": "integer", "minimum": -REQUEST_ID_INT_MAX, "maximum": REQUEST_ID_INT_MAX},
    ],
}
SCHEMAS: dict[Callable[[Any], Any], dict[str, Any]] = {
    _channel: CHANNEL_SCHEMA,
    _offset: {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX},
    _limit: {"type": "integer", "minimum": 1, "maximum": HISTORY_LIMIT_MAX},
    _message_type: TYPE_SCHEMA,
    _epoch: EPOCH_SCHEMA,
    _boolean: {"type": "boolean"},
    _token: {"type": "string", "minLength": 1, "maxLength": TOKEN_MAX},
    _user_id: USER_ID_SCHEMA,
    _message_id: {"type": "string", "minLength": 1, "maxLength": MESSAGE_ID_MAX, "pattern": "^[^\\x00]*$"},
    check_content: {"description": f"Any JSON value, nested at most {CONTENT_DEPTH_MAX} levels deep."},
}

ACTIONS: dict[str, dict[str, Field]] = {
    "ping": {},
    "pong": {},
    "subscribe": {"channel": Field(_channel, True), "since": Field(_offset), "epoch": Field(_epoch)},
    "unsubscribe": {"channel": Field(_channel, True)},
    "send_to_channel": {
        "channel": Field(_channel, True),
        "content": Field(check_content, True),
        "type": Field(_message_type),
        "persist": Field(_boolean),
        "id": Field(_message_id),  # a retry with the same id is answered, not published again
    },
    "send_to_user": {
        "user_id": Field(_user_id, True),
        "content": Field(check_content, True),
        "type": Field(_message_type),
    },
    "message": {"content": Field(check_content, True)},
    "history": {
        "channel": Field(_channel, True),
        "since": Field(_offset),
        "limit": Field(_limit),
        "epoch": Field(_epoch),
    },
    "presence": {"channel": Field(_channel, True), "counts_only": Field(_boolean)},
    "snapshot": {"channel": Field(_channel, True)},
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
    if isinstance(request_id, int) and abs(request_id) <= REQUEST_ID_INT_MAX:
        return request_id
    if isinstance(request_id, str) and len(request_id) <= REQUEST_ID_MAX:
        return request_id
    return None


def frame_schema(action: str) -> dict[str, Any]:
    """The JSON Schema of a client frame naming `action`: what `parse_frame` accepts for it."""
    fields = ACTIONS[action]
    required = [key for key, field in fields.items() if field.required]
    data: dict[str, Any] = {
        "type": "object" if required else ["object", "null"],
        "properties": {key: field.schema for key, field in fields.items()},
        "additionalProperties": False,
    }
    if required:
        data["required"] = required
    return {
        "type": "object",
        "properties": {
            "action": {"type": "string", "const": action},
            "data": data,
            "request_id": dict(REQUEST_ID_SCHEMA),
        },
        "required": ["action", "data"] if required else ["action"],
        "additionalProperties": False,
    }


def parse_frame(payload: Any) -> Frame:
    """Validate a decoded client frame against the action schemas; raise a typed error."""
    if not isinstance(payload, dict):
        raise InvalidMessage("A frame is a JSON object with an `action`.")
    if not FRAME_KEYS.issuperset(payload):
        unknown = set(payload) - FRAME_KEYS
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


__all__ = ["ACTIONS", "FRAME_KEYS", "Field", "Frame", "frame_schema", "parse_frame", "request_id_of"]
