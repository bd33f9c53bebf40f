"""The one publish path, and the other writes of the realtime core.

Everything that sends — HTTP API, WebSocket actions, admin, notifications, the server-side
Python API — calls these functions. A publish validates its channel, builds the envelope once
and encodes it once (persistence sets the offset in that text, `protocol.with_offset`); a
persisted one is committed before it is delivered, and every process with subscribers of the
channel receives it once (`bus`, `hub`).

Each write has a sync form (views, admin, management commands: a thread, possibly inside a
transaction) and an async twin prefixed with `a` (consumers, async views: the event loop, where
persisted publishes share transactions — `commits`). A publish with an `id` already published to
its channel within PUBLISH_IDEMPOTENCY_WINDOW answers the first result (`idempotency`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction

from streaming import commits, delivery, history, idempotency, protocol
from streaming.bus import get_bus
from streaming.errors import MessageTooLarge, NotFound, Unavailable


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


@dataclass(slots=True)
class Publish:
    """One message to publish (an item of a batch)."""

    channel: str
    content: Any
    type: str = protocol.DEFAULT_SERVER_TYPE
    sender: dict[str, Any] | None = None
    message_id: str | None = None
    persist: bool = False


@dataclass(slots=True)
class Outgoing:
    """An envelope ready for the bus: encoded once, with the routing data beside it."""

    channel: str
    text: str
    envelope: dict[str, Any]
    persist: bool = False
    keyed: bool = False  # its id came from the publisher: a retry of it is answered, not sent again
    claim: Any = field(default=None, repr=False)  # the idempotency claim of that id
    epoch: str | None = None  # the epoch of its offset, once persisted

    @property
    def published(self) -> Published:
        return Published(self.envelope["id"], self.channel, self.envelope["offset"])

    def bus_message(self) -> dict[str, Any]:
        return protocol.bus_message(self.channel, self.text, self.envelope["offset"], self.envelope["type"], self.epoch)


def prepare(publish: Publish) -> Outgoing:
    """Validate, build and encode (once) the envelope of a publish; nothing is stored or sent."""
    protocol.validate_channel(publish.channel)
    envelope = protocol.envelope(
        id=publish.message_id, type=publish.type, channel=publish.channel, content=publish.content,
        sender=publish.sender,
    )  # fmt: skip
    text = protocol.encode(envelope)
    limit = settings.REALTIME.sse_max_message_size  # one settings read per publish
    # 20 bytes for the offset persistence writes in.
    if len(text) + 20 > limit // 4 and len(text.encode()) + 20 > limit:
        raise MessageTooLarge(f"The message is larger than {limit} bytes.")
    return Outgoing(publish.channel, text, envelope, publish.persist, publish.message_id is not None)


# ---------------------------------------------------------------------------------------------
# Publishing from the event loop


async def apublish(publish: Publish) -> Published:
    """Publish one message (async); see `publish_to_channel`."""
    if not publish.persist and (publish.message_id is None or not settings.REALTIME.publish_idempotency_window):
        outgoing = prepare(publish)  # the commonest publish: nothing to store, nothing to remember
        await delivery.asend(outgoing)
        return outgoing.published
    (published,) = await apublish_batch([publish])
    return published


async def apublish_batch(publishes: list[Publish]) -> list[Published]:
    """Publish several messages: all are validated before any is sent, the persisted ones are
    committed in one transaction, and the results come back in order."""
    return await _apublish_prepared([prepare(publish) for publish in publishes])


async def _apublish_prepared(outgoings: list[Outgoing]) -> list[Published]:
    earlier = await _claim(outgoings)
    fresh = [o for o, before in zip(outgoings, earlier, strict=True) if before is None]
    try:
        persisted = [o for o in fresh if o.persist]
        if persisted:
            await commits.acommit(persisted)  # delivered in offset order by the group commit
        for outgoing in fresh:
            if not outgoing.persist:
                await delivery.asend(outgoing)
    except BaseException:
        await _release(fresh)
        raise
    await _record(fresh)
    return [before or outgoing.published for outgoing, before in zip(outgoings, earlier, strict=True)]


async def _claim(outgoings: list[Outgoing]) -> list[Published | None]:
    """Claim the ids of the outgoings that have one; the earlier result where one was published."""
    window = settings.REALTIME.publish_idempotency_window
    earlier: list[Published | None] = []
    for outgoing in outgoings:
        found = None
        if window and outgoing.keyed and outgoing.claim is None:
            claim = await idempotency.claims().claim(
                idempotency.claim_key(outgoing.channel, outgoing.envelope["id"]), window
            )
            if claim.earlier is not None:
                found = Published(**claim.earlier)
            outgoing.claim = claim
        earlier.append(found)
    return earlier


async def _record(outgoings: list[Outgoing]) -> None:
    window = settings.REALTIME.publish_idempotency_window
    for outgoing in outgoings:
        if outgoing.claim is not None and outgoing.claim.key is not None:
            published = outgoing.published
            result = {"id": published.id, "channel": published.channel, "offset": published.offset}
            await idempotency.claims().done(outgoing.claim.key, result, window)


async def _release(outgoings: list[Outgoing]) -> None:
    for outgoing in outgoings:
        if outgoing.claim is not None and outgoing.claim.key is not None:
            await idempotency.claims().release(outgoing.claim.key)


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
    return await apublish(Publish(channel, content, type, sender, message_id, persist))


async def apublish_to_user(*, user_id: str, content: Any, **options: Any) -> Published:
    channel = protocol.user_channel(protocol.validate_user_id(user_id))
    return await apublish_to_channel(channel=channel, content=content, **options)


async def abroadcast(*, content: Any, **options: Any) -> Published:
    return await apublish_to_channel(channel=protocol.BROADCAST, content=content, **options)


# ---------------------------------------------------------------------------------------------
# Publishing from sync code


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

    With `persist`, the message is committed to the channel's history first — in the caller's
    transaction when there is one — and delivered after commit (it returns once committed);
    without, it is delivered at most once.
    """
    (published,) = publish_batch([Publish(channel, content, type, sender, message_id, persist)])
    return published


def publish_batch(publishes: list[Publish]) -> list[Published]:
    """Sync twin of `apublish_batch`; the persisted ones join the caller's transaction, if any."""
    outgoings = [prepare(publish) for publish in publishes]
    if settings.REALTIME.publish_idempotency_window and any(o.keyed for o in outgoings):
        return async_to_sync(_apublish_prepared)(outgoings)  # the claims are async; only ids pay for it
    persisted = [outgoing for outgoing in outgoings if outgoing.persist]
    if persisted:
        with transaction.atomic():
            commits.persist(persisted)
            transaction.on_commit(partial(delivery.send_committed_many, persisted))
    for outgoing in outgoings:
        if not outgoing.persist:
            delivery.send(outgoing)
    return [outgoing.published for outgoing in outgoings]


def publish_to_user(*, user_id: str, content: Any, **options: Any) -> Published:
    """Send to every connection of a user, on both transports."""
    channel = protocol.user_channel(protocol.validate_user_id(user_id))
    return publish_to_channel(channel=channel, content=content, **options)


def broadcast(*, content: Any, **options: Any) -> Published:
    """Send to every connection of every process, on both transports."""
    return publish_to_channel(channel=protocol.BROADCAST, content=content, **options)


# ---------------------------------------------------------------------------------------------
# History


def history_reset(channel: str) -> str:
    """Delete a channel's history; its offsets start again at 0 under a new epoch, which is
    returned. Live subscribers get `stream-reset` at once; a client resuming from a position of the
    old epoch gets `recovered: false` / `stream-reset`, never other messages under old offsets."""
    protocol.validate_channel(channel)
    epoch = history.history_reset(channel)
    # Every process tells its subscribers; one that misses this (the bus is down) sees the new
    # epoch at its next position check, within seconds.
    with contextlib.suppress(Unavailable):
        get_bus().publish(channel, protocol.bus_message(channel, "", 0, protocol.RESET_EVENT, epoch))
    return epoch


async def ahistory_reset(channel: str) -> str:
    """Async twin of `history_reset`."""
    return await database_sync_to_async(history_reset)(channel)


# ---------------------------------------------------------------------------------------------
# Connections


CLOSE_ANSWER_SECONDS = 3.0


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


def connection_close(connection_id: str, code: int = protocol.CloseCode.CLOSED_BY_ADMIN) -> None:
    async_to_sync(aconnection_close)(connection_id, code)
