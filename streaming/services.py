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

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from streaming import metrics, protocol
from streaming.errors import MessageTooLarge, NotFound, StreamingError, Unavailable
from streaming.history import history_append
from streaming.runtime import running_runtime

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
# The bus


async def _group_send(outgoing: Outgoing) -> None:
    layer = get_channel_layer()
    try:
        await layer.group_send(protocol.group_name(outgoing.channel), outgoing.bus_message())
    except Exception as error:  # redis-py raises several unrelated types when Redis is away
        metrics.BUS_FAILURES.inc()
        raise Unavailable() from error
    metrics.PUBLISHED.labels("true" if outgoing.envelope["offset"] is not None else "false").inc()


async def asend_to_bus(outgoing: Outgoing) -> None:
    """Hand an encoded envelope to the channel layer; Unavailable if the bus is down.

    A persisted message the bus refuses is kept and sent again once the bus is back (it is
    committed, so it also stays recoverable from history meanwhile).
    """
    try:
        await _group_send(outgoing)
    except Unavailable as error:
        logger.warning("bus publish to %s failed: %r", outgoing.channel, error.__cause__)
        if outgoing.envelope["offset"] is not None:
            _defer(outgoing)
            _deliver_locally(outgoing)
        raise


def send_to_bus(outgoing: Outgoing) -> None:
    async_to_sync(asend_to_bus)(outgoing)


# Persisted messages the bus refused, sent again by a retry task of this process once the bus is
# back (the oldest are dropped past the cap; they stay recoverable from history either way).
UNDELIVERED_MAX = 10_000
RETRY_SECONDS = 1.0
_undelivered: deque[Outgoing] = deque(maxlen=UNDELIVERED_MAX)
_retry_task: asyncio.Task | None = None


def _defer(outgoing: Outgoing) -> None:
    global _retry_task
    _undelivered.append(outgoing)
    if _retry_task is None or _retry_task.done():
        _retry_task = asyncio.get_running_loop().create_task(_retry_loop(), name="streaming-bus-retry")


async def _retry_loop() -> None:
    while _undelivered:
        await asyncio.sleep(RETRY_SECONDS)
        sent = await aretry_undelivered()
        if sent:
            logger.info("bus is back: delivered %d persisted message(s) held during the outage", sent)


def _deliver_locally(outgoing: Outgoing) -> None:
    """Hand a persisted message the bus refused to this process's own subscribers at once.

    They need not wait for the bus; when the retry sends it again, the hub drops it as already
    dispatched (continuity), and other processes recover it from history if the bus lost it.
    """
    runtime = running_runtime()
    if runtime is not None:
        runtime.hub.hub_publish(outgoing.bus_message())


async def aretry_undelivered() -> int:
    """Send held persisted messages in order; stops at the first failure."""
    sent = 0
    while _undelivered:
        outgoing = _undelivered[0]
        try:
            await _group_send(outgoing)
        except Unavailable:
            break
        _undelivered.popleft()
        sent += 1
    return sent


def _log_undelivered(outgoing: Outgoing) -> None:
    logger.warning(
        "persisted message %s (%s#%s) not delivered live yet: the bus is down; it will be sent when it is back",
        outgoing.envelope["id"], outgoing.channel, outgoing.envelope["offset"],
    )  # fmt: skip


def send_after_commit(outgoing: Outgoing) -> None:
    """Deliver a committed message; if the bus is down it is held for retry (and in history)."""
    try:
        send_to_bus(outgoing)
    except Unavailable:
        _log_undelivered(outgoing)


async def _asend_committed(outgoing: Outgoing) -> None:
    try:
        await asend_to_bus(outgoing)
    except Unavailable:
        _log_undelivered(outgoing)


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
        send_to_bus(outgoing)
        return outgoing.published
    with transaction.atomic():
        outgoing = prepare(channel, envelope, persist=True)
        transaction.on_commit(partial(send_after_commit, outgoing))
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
        await asend_to_bus(outgoing)
        return outgoing.published
    outgoing = await database_sync_to_async(prepare)(channel, envelope, True)
    await _asend_committed(outgoing)
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
    """Close a live connection in whichever process holds it; NotFound if it is not open."""
    from streaming.runtime import get_runtime

    runtime = get_runtime()
    if runtime.registry.close_local(connection_id, code, reason):
        return
    target = await database_sync_to_async(runtime.registry.locate)(connection_id)
    if target is None:
        raise NotFound(f"No open connection {connection_id!r}.")
    try:
        await get_channel_layer().send(
            target,
            {"type": "hub.close", "connection_id": connection_id, "code": int(code), "reason": reason},
        )
    except StreamingError:
        raise
    except Exception as error:
        raise Unavailable() from error


def connection_close(connection_id: str, code: int = protocol.CloseCode.CLOSED_BY_ADMIN) -> None:
    async_to_sync(aconnection_close)(connection_id, code)
