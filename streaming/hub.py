"""The per-process hub: one bus subscription per channel, fan-out to local subscribers.

Connections do not sit in channel-layer groups themselves. The process joins the group of every
channel that has at least one local subscriber (WebSocket consumer or SSE listener) and hands the
one bus message it receives per publish — an already-encoded envelope — to each of them. This
keeps the bus cost per publish independent of the number of subscribers (Centrifugo's node hub).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from streaming import metrics, protocol
from streaming.continuity import Continuity
from streaming.history import Recovery, history_read

if TYPE_CHECKING:
    from streaming.lifecycle import ClientConnection

logger = logging.getLogger(__name__)


class Hub:
    """Channel → local subscribers, and the one bus channel of this process."""

    def __init__(self, commands: dict[str, Callable[[dict], Any]] | None = None, layer: Any = None) -> None:
        """`commands`: handlers of the other bus messages sent to this process, by type."""
        self.layer = layer or get_channel_layer()
        self.channel_name: str | None = None
        self._members: dict[str, set[ClientConnection]] = {}
        self._transports: dict[str, Counter[str]] = {}  # channel → local subscribers per transport
        self._links: dict[str, asyncio.Future] = {}
        self._handlers: dict[str, Callable[[dict], Any]] = {"hub.publish": self.hub_publish, **(commands or {})}
        self.continuity = Continuity(self._dispatch, joined=self._members.__contains__)
        self._tasks: list[asyncio.Task] = []
        self._start_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> str:
        """Open this process's bus channel and start receiving (idempotent)."""
        async with self._start_lock:
            if self.channel_name is None:
                self.channel_name = await self.layer.new_channel("hub.")
                self._tasks = [
                    asyncio.create_task(self._receive_loop(), name="streaming-hub"),
                    asyncio.create_task(self._position_loop(), name="streaming-hub-positions"),
                ]
        return self.channel_name

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.continuity.stop()

    # -- membership -----------------------------------------------------------------------

    async def join(self, channel: str, subscriber: ClientConnection) -> None:
        """Add a local subscriber; the first one makes the process join the channel's group.

        The hub calls `subscriber.deliver(message)` for every bus message of the channel (see
        `protocol.bus_message`); persisted ones come in offset order without gaps (see `continuity.py`).
        The same dict goes to every local subscriber, which may cache a derived encoding in it
        (the SSE frame) but must not change what is there.
        """
        members = self._members.get(channel)
        if members is None:
            members = self._members[channel] = set()
            self._transports[channel] = Counter()
            self._link(channel, functools.partial(self._group_add, channel))
        if subscriber not in members:
            members.add(subscriber)
            self._transports[channel][subscriber.transport] += 1
        await asyncio.shield(self._links[channel])

    def leave(self, channel: str, subscriber: ClientConnection) -> None:
        """Remove a local subscriber; the last one makes the process leave the group."""
        members = self._members.get(channel)
        if members is None or subscriber not in members:
            return
        members.discard(subscriber)
        self._transports[channel][subscriber.transport] -= 1
        if not members:
            del self._members[channel]
            del self._transports[channel]
            self.continuity.forget(channel)
            self._link(channel, self.layer.group_discard)

    async def _group_add(self, channel: str, group: str, channel_name: str) -> None:
        """Anchor the channel's offsets first, so every message after the join is accounted for."""
        await self.continuity.anchor(channel)
        await self.layer.group_add(group, channel_name)

    def _link(self, channel: str, operation: Callable[[str, str], Awaitable[None]]) -> None:
        """Chain group_add/group_discard per channel so they reach the layer in order."""
        previous = self._links.get(channel)
        group = protocol.group_name(channel)

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await operation(group, self.channel_name)

        link = asyncio.ensure_future(run())
        link.add_done_callback(lambda done: self._link_done(channel, done))
        self._links[channel] = link

    def _link_done(self, channel: str, link: asyncio.Future) -> None:
        if not link.cancelled() and link.exception() is not None:
            logger.error("bus membership change for %s failed: %r", channel, link.exception())
        if self._links.get(channel) is link and channel not in self._members:
            del self._links[channel]

    async def history_read(self, channel: str, since: int | None) -> Recovery:
        """`history.history_read` for a subscriber that has joined the channel here.

        A channel this process has anchored at offset 0 and has seen no persisted message of
        since has no history: the answer is known without a query (most channels of a
        connect storm). A persisted message still in flight arrives after it as a live one.
        """
        if self.continuity.offsets.get(channel) == 0:
            return Recovery(channel, 0, recovered=since == 0)
        return await database_sync_to_async(history_read)(channel, since)

    def members(self, channel: str) -> set[ClientConnection]:
        return self._members.get(channel, set())

    # -- receiving ------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("bus receive failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            handler = self._handlers.get(message.get("type"))
            if handler is None:
                logger.warning("bus message of unknown type %r ignored", message.get("type"))
                continue
            try:
                handler(message)
            except Exception:
                logger.exception("bus message handler for %r failed", message.get("type"))

    async def _position_loop(self) -> None:
        """Every few seconds, catch persisted messages the bus lost with nothing after them."""
        while True:
            await asyncio.sleep(max(1.0, 5 * settings.REALTIME.registry_flush_interval))
            try:
                await self.continuity.check_positions()
            except Exception:
                logger.exception("position check failed; retrying at the next one")

    def hub_publish(self, message: dict) -> None:
        """Hand one published envelope to every local subscriber of its channel, in offset order."""
        if message["channel"] not in self._members:
            return
        if message["offset"] is not None and not self.continuity.admit(message):
            return
        self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        members = self._members.get(message["channel"])
        if not members:
            return
        metrics.LATENCY.observe(max(0.0, time.time() - message["sent_at"]))
        for transport, count in self._transports[message["channel"]].items():
            metrics.deliveries.add(transport, count)
        # deliver() never changes membership synchronously, so the set can be iterated as is.
        for subscriber in members:
            subscriber.deliver(message)
