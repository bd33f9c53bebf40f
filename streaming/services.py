"""The one publish path, and the other writes of the realtime core.

Everything that sends — HTTP API, WebSocket actions, admin, notifications, the server-side
Python API — calls these functions; nothing else calls `group_send`. A publish validates the
channel, builds the envelope once, encodes it once, stores it first when persisted (delivery
after commit) and hands the text to the channel layer, where every process with local
subscribers receives it once (see `hub.py`).

Each write has a sync form (views, admin, management commands: a thread, possibly inside a
transaction) and an async twin prefixed with `a` (consumers, the event loop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction

from streaming import delivery, protocol
from streaming.bus import get_bus
from streaming.errors import MessageTooLarge, NotFound, Unavailable
from streaming.history import history_append

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """The result of a publish: the envelope id, and the channel offset when persisted."""

    id: str
    channel: str
    offset: int | None = None

    def as_ack(self) -> dict[str, Any]:
        ack: dict[str, Any] = {"id": self.id}
        if self.offset is not None:
            ack["offset"] = self.offset
        return ack


@dataclass(frozen=True)
class Outgoing:
    """An envelope ready for the bus: encoded once, with the routing data beside it."""

    channel: str
    text: str
    envelope: dict[str, Any]

    @property
    def published(self) -> Published:
        return Published(self.envelope["id"], self.channel, self.envelope["offset"])

    def bus_message(self) -> dict[str, Any]:
        return protocol.bus_message(self.channel, self.text, self.envelope["offset"], self.envelope["type"])


def build_envelope(
    *,
    channel: str,
    content: Any,
    type: str = protocol.DEFAULT_SERVER_TYPE,
    sender: dict[str, Any] | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Validate and build the envelope of a channel message (offset comes with persistence)."""
    protocol.validate_channel(channel)
    return protocol.envelope(id=message_id, type=type, channel=channel, content=content, sender=sender)


def _encode_checked(envelope: dict[str, Any]) -> str:
    text = protocol.encode(envelope)
    limit = settings.REALTIME.sse_max_message_size
    if len(text) > limit // 4 and len(text.encode()) > limit:
        raise MessageTooLarge(f"The message is larger than {limit} bytes.")
    return text


def _persist(channel: str, envelope: dict[str, Any]) -> Outgoing:
    """Store the envelope in its channel's history and encode it (rolls back if too large)."""
    with transaction.atomic():
        return Outgoing(channel, history_append(channel=channel, envelope=envelope, encode=_encode_checked), envelope)


def prepare(channel: str, envelope: dict[str, Any], persist: bool) -> Outgoing:
    """Encode (and when asked, persist) an envelope: the part of a publish that may hit the DB."""
    if persist:
        return _persist(channel, envelope)
    return Outgoing(channel, _encode_checked(envelope), envelope)


# ---------------------------------------------------------------------------------------------
# Publishing


def publish_to_channel(
    *,
    channel: str,
    content: Any,
    type: str = protocol.DEFAULT_SERVER_TYPE,
    sender: dict[str, Any] | None = None,
    persist: bool = False,
    message_id: str | None = None,
) -> Published:
    """Publish to a channel's subscribers on every transport and process.

    With `persist`, the message is committed to the channel's history first and delivered after
    commit (it returns once committed); without, it is delivered at most once.
    """
    envelope = build_envelope(channel=channel, content=content, type=type, sender=sender, message_id=message_id)
    if not persist:
        outgoing = prepare(channel, envelope, persist=False)
        delivery.send(outgoing)
        return outgoing.published
    with transaction.atomic():
        outgoing = prepare(channel, envelope, persist=True)
        transaction.on_commit(partial(delivery.send_committed, outgoing))
    return outgoing.published


async def apublish_to_channel(
    *,
    channel: str,
    content: Any,
    type: str = protocol.DEFAULT_SERVER_TYPE,
    sender: dict[str, Any] | None = None,
    persist: bool = False,
    message_id: str | None = None,
) -> Published:
    """Async twin of `publish_to_channel`."""
    envelope = build_envelope(channel=channel, content=content, type=type, sender=sender, message_id=message_id)
    if not persist:
        outgoing = prepare(channel, envelope, persist=False)
        await delivery.asend(outgoing)
        return outgoing.published
    outgoing = await database_sync_to_async(prepare)(channel, envelope, True)
    await delivery.asend_committed(outgoing)
    return outgoing.published


def publish_to_user(*, user_id: str, content: Any, **options: Any) -> Published:
    """Send to every connection of a user, on both transports."""
    channel = protocol.user_channel(protocol.validate_user_id(user_id))
    return publish_to_channel(channel=channel, content=content, **options)


async def apublish_to_user(*, user_id: str, content: Any, **options: Any) -> Published:
    channel = protocol.user_channel(protocol.validate_user_id(user_id))
    return await apublish_to_channel(channel=channel, content=content, **options)


def broadcast(*, content: Any, **options: Any) -> Published:
    """Send to every connection of every process, on both transports."""
    return publish_to_channel(channel=protocol.BROADCAST, content=content, **options)


async def abroadcast(*, content: Any, **options: Any) -> Published:
    return await apublish_to_channel(channel=protocol.BROADCAST, content=content, **options)


# ---------------------------------------------------------------------------------------------
# Connections


async def aconnection_close(
    connection_id: str,
    code: int = protocol.CloseCode.CLOSED_BY_ADMIN,
    reason: str = "closed by an administrator",
) -> None:
    """Close a live connection in whichever process holds it; NotFound if it is not open (or
    already closing): the process holding it answers whether it closed it."""
    from streaming.runtime import get_runtime

    runtime = get_runtime()
    local = runtime.registry.close_local(connection_id, code, reason)
    if local is not None:
        if not local:
            raise NotFound(f"No open connection {connection_id!r}.")
        return
    target = await database_sync_to_async(runtime.registry.locate)(connection_id)
    if target is None:
        raise NotFound(f"No open connection {connection_id!r}.")
    command = {"type": "hub.close", "connection_id": connection_id, "code": int(code), "reason": reason}
    answer = await get_bus().arequest(target, command, timeout=CLOSE_ANSWER_SECONDS)
    if answer is None:
        raise Unavailable(f"The server process holding {connection_id!r} did not answer.")
    if not answer["closed"]:
        raise NotFound(f"No open connection {connection_id!r}.")


CLOSE_ANSWER_SECONDS = 3.0


def connection_close(connection_id: str, code: int = protocol.CloseCode.CLOSED_BY_ADMIN) -> None:
    async_to_sync(aconnection_close)(connection_id, code)
