"""Publish bodies read without DRF's field machinery, for the bodies that are plainly valid.

DRF's nested serializers cost ~10 µs per field of every item of a batch: three quarters of the
server's time on `POST /api/publish/batch/` (bench/OPTIMISATIONS.md). The readers below accept a
strict subset of what the serializers accept — JSON strings and booleans exactly as the API
documents them, nothing DRF would coerce (`"true"`, `1`, a number as a channel name, an id with
spaces around it) — and give the same `Publish` the serializer would. Anything else, every error
included, answers None, and the view runs the serializer, whose errors are the API's errors
(tests/streaming/test_plain_bodies.py holds the two to the same answers).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from streaming import protocol
from streaming.protocol import CHANNEL_RE, DEFAULT_SERVER_TYPE, MESSAGE_ID_MAX, TYPE_RE, USER_ID_RE
from streaming.services import Publish

_MESSAGE_FIELDS = frozenset({"id", "type", "content"})
_ITEM_FIELDS = frozenset({"channel", "user_id", "broadcast", "message", "persist"})
_CHANNEL_FIELDS = frozenset({"channel", "message", "persist"})


def batch(data: Any) -> list[Publish] | None:
    """The publishes of a batch body (`{"messages": [...]}`), or None to let the serializer judge."""
    if type(data) is not dict or len(data) != 1:
        return None
    items = data.get("messages")
    if type(items) is not list or not 0 < len(items) <= settings.REALTIME.publish_batch_max_items:
        return None
    publishes = []
    for item in items:
        publish = batch_item(item)
        if publish is None:
            return None
        publishes.append(publish)
    return publishes


def batch_item(item: Any) -> Publish | None:
    """One message of a batch: to a channel (persisted or not), a user, or everyone."""
    if type(item) is not dict or not item.keys() <= _ITEM_FIELDS:
        return None
    persist = item.get("persist", False)
    broadcast = item.get("broadcast", False)
    if type(persist) is not bool or type(broadcast) is not bool:
        return None
    if "channel" in item:
        channel = item["channel"]
        if type(channel) is not str or not CHANNEL_RE.fullmatch(channel) or "user_id" in item or broadcast:
            return None
    elif "user_id" in item:
        user_id = item["user_id"]
        if type(user_id) is not str or not USER_ID_RE.fullmatch(user_id) or broadcast or persist:
            return None
        channel = protocol.user_channel(user_id)
    elif broadcast and not persist:
        channel = protocol.BROADCAST
    else:
        return None
    return _message(item.get("message"), channel, persist)


def channel_publish(data: Any) -> Publish | None:
    """A `POST /ws/send-to-channel` body (`channel`, `message`, `persist`), or None."""
    if type(data) is not dict or not data.keys() <= _CHANNEL_FIELDS:
        return None
    channel, persist = data.get("channel"), data.get("persist", False)
    if type(channel) is not str or not CHANNEL_RE.fullmatch(channel) or type(persist) is not bool:
        return None
    return _message(data.get("message"), channel, persist)


def _message(message: Any, channel: str, persist: bool) -> Publish | None:
    if type(message) is not dict or "content" not in message or not message.keys() <= _MESSAGE_FIELDS:
        return None
    kind = message.get("type", DEFAULT_SERVER_TYPE)
    if type(kind) is not str or not TYPE_RE.fullmatch(kind):
        return None
    message_id = message.get("id")
    if "id" in message and not _plain_id(message_id):
        return None
    content = message["content"]
    if type(content) is dict or type(content) is list:
        try:
            protocol.check_content(content)
        except ValueError:
            return None
    return Publish(channel, content, kind, message_id=message_id, persist=persist)


def _plain_id(value: Any) -> bool:
    """An id DRF's CharField keeps as it is: ASCII (no surrogates), no NUL, nothing to trim."""
    return (
        type(value) is str
        and 0 < len(value) <= MESSAGE_ID_MAX
        and value.isascii()
        and "\x00" not in value
        and value == value.strip()
    )
