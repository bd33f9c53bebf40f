"""Client frames: the schema of each action's `data`, and their validation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streaming.errors import InvalidChannel, InvalidMessage, UnknownAction
from streaming.protocol.names import (
    EPOCH_RE,
    MESSAGE_ID_MAX,
    REQUEST_ID_MAX,
    TYPE_RE,
    validate_channel,
    validate_user_id,
)
from streaming.protocol.shapes import check_content

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


def _epoch(value: Any) -> str:
    if not isinstance(value, str) or not EPOCH_RE.fullmatch(value):
        raise ValueError("an epoch: up to 16 letters and digits")
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


def _message_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MESSAGE_ID_MAX or "\x00" in value:
        raise ValueError(f"a string of 1-{MESSAGE_ID_MAX} characters")
    return value


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


__all__ = ["ACTIONS", "FRAME_KEYS", "Field", "Frame", "parse_frame", "request_id_of"]
