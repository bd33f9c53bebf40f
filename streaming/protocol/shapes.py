"""Every JSON shape the server emits: the envelope, replies, errors, greetings, the bus message."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from streaming.errors import InvalidJSON, InvalidMessage
from streaming.protocol.names import CONTENT_DEPTH_MAX

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


_second: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The current time as ISO-8601 UTC with microseconds and a `Z` suffix.

    Formatted by hand from the clock, the date part once a second: `datetime.isoformat` was the
    largest single cost of a publish (bench/OPTIMISATIONS.md).
    """
    global _second
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second[1]}.{int((now - second) * 1_000_000):06d}Z"


def new_id() -> str:
    """A random UUID (version 4) as text, as `str(uuid.uuid4())` gives it, without the UUID object.

    The random bytes come from `os.urandom` 4 KiB at a time: a system call per id was a cost of
    every publish (bench/OPTIMISATIONS.md, step 21). Each id takes its 16 bytes with one `next`
    on a list iterator, which the GIL makes atomic: threads never share an id's bytes; a forked
    child starts a pool of its own.
    """
    raw = next(_random_blocks, None)
    if raw is None:
        raw = _refill()
    raw = bytearray(raw)
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_RANDOM_BLOCK_IDS = 256


def _refill() -> bytes:
    global _random_blocks
    pool = os.urandom(16 * _RANDOM_BLOCK_IDS)
    blocks = iter([pool[i : i + 16] for i in range(0, len(pool), 16)])
    raw = next(blocks)
    _random_blocks = blocks
    return raw


def _forget_random_blocks() -> None:
    global _random_blocks
    _random_blocks = iter(())


_random_blocks: Any = iter(())
os.register_at_fork(after_in_child=_forget_random_blocks)  # a forked worker must not reuse its parent's


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


_NULL_OFFSET = b'"offset":null}'.decode()


def with_offset(text: str, offset: int) -> str:
    """An encoded envelope (its `offset` null, the last key) with its offset set: persistence
    assigns the offset after the one encoding of the publish, without a second one."""
    if not text.endswith(_NULL_OFFSET):
        raise ValueError("not an encoded envelope without an offset")
    return f"{text[:-5]}{offset}}}"


RESET_EVENT = "stream-reset"


def bus_message(channel: str, text: str, offset: int | None, event: str, epoch: str | None = None) -> dict[str, Any]:
    """What the bus carries for one publish: the encoded envelope plus what routing needs.

    `event` is the envelope's type (the SSE event name), so no subscriber has to decode `text`;
    `epoch` is the epoch of a persisted message's offset. Subscribers may cache derived
    encodings in it (`ws`, `sse`, `sse_chunk`); see `hub.py`. A history reset travels as one
    too: event RESET_EVENT, offset 0, the new epoch, no text.
    """
    return {"type": "hub.publish", "channel": channel, "offset": offset, "event": event, "text": text,
            "sent_at": time.time(), "epoch": epoch}  # fmt: skip


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


def add_server_side(greeting: dict, channels: list[str], refused: dict[str, str], info: Any) -> None:
    """Add to a `connected` greeting the server-side channels joined, those refused (with the
    reason) and the connect hook's `info`, each only when there is one."""
    data = greeting["data"]
    if channels:
        data["channels"] = channels
    if refused:
        data["refused"] = refused
    if info is not None:
        data["info"] = info


def heartbeat(timestamp: str | None = None) -> dict[str, Any]:
    return {"type": "heartbeat", "timestamp": timestamp or now_iso()}


def history_page(recovery: Any) -> dict[str, Any]:
    """The content of a WebSocket `history` reply and the body of the history API: one shape."""
    return {
        "channel": recovery.channel,
        "offset": recovery.offset,
        "epoch": recovery.epoch,
        "messages": recovery.messages,
        "recovered": recovery.recovered,
        "has_more": recovery.has_more,
    }


def snapshot_page(snapshot: Any) -> dict[str, Any]:
    """The content of a WebSocket `snapshot` reply and the body of the snapshot API: the
    application's data and the channel's position read with it (README, "Live models")."""
    return {
        "channel": snapshot.channel,
        "offset": snapshot.offset,
        "epoch": snapshot.epoch,
        "data": snapshot.data,
        "has_more": snapshot.has_more,
    }


__all__ = [
    "RESET_EVENT",
    "add_server_side",
    "bus_message",
    "check_content",
    "connected",
    "decode",
    "encode",
    "envelope",
    "error_body",
    "error_reply",
    "heartbeat",
    "history_page",
    "new_id",
    "notification_content",
    "now_iso",
    "presence_content",
    "reply",
    "sender",
    "snapshot_page",
    "with_offset",
]
