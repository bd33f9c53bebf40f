"""The per-process hub: one bus subscription per channel, fan-out to local subscribers.

Connections do not subscribe to the bus themselves. The process subscribes to every channel that
has at least one local subscriber (WebSocket consumer or SSE listener) and hands the one bus
message it receives per publish — an already-encoded envelope — to each of them. This keeps the
bus cost per publish independent of the number of subscribers (Centrifugo's node hub).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings

from streaming import metrics, protocol
from streaming.bus import get_bus
from streaming.continuity import Continuity
from streaming.history import Recovery, history_position, history_read

if TYPE_CHECKING:
    from streaming.lifecycle import ClientConnection

logger = logging.getLogger(__name__)


class Hub:
    """Channel → local subscribers, and this process's attachment to the bus."""

    def __init__(self, commands: dict[str, Callable[[dict], Any]] | None = None, bus: Any = None) -> None:
        """`commands`: handlers of the commands sent to this process, by type; each returns the
        command's answer (a dict) or None."""
        self.bus = bus or get_bus()
        self.address: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._members: dict[str, set[ClientConnection]] = {}
        self._transports: dict[str, Counter[str]] = {}  # channel → local subscribers per transport
        self._joining: dict[str, asyncio.Future] = {}
        self._commands: dict[str, Callable[[dict], Any]] = commands or {}
        self.continuity = Continuity(self._dispatch, joined=self._members.__contains__, on_reset=self._reset)
        self._tasks: list[asyncio.Task] = []
        self._start_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> str:
        """Attach to the bus and start checking positions (idempotent); returns the address."""
        async with self._start_lock:
            if self.address is None:
                self.loop = asyncio.get_running_loop()
                self._loop_thread = threading.get_ident()
                self.address = await self.bus.attach(self)
                self._tasks = [asyncio.create_task(self._position_loop(), name="streaming-hub-positions")]
        return self.address

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.continuity.stop()
        if self.address is not None:
            await self.bus.detach(self)
            self.address = None

    # -- membership -----------------------------------------------------------------------

    async def join(self, channel: str, subscriber: ClientConnection) -> None:
        """Add a local subscriber; the first one makes the process subscribe to the channel.

        The hub calls `subscriber.deliver(message)` for every bus message of the channel (see
        `protocol.bus_message`); persisted ones come in offset order without gaps (see
        `continuity.py`). The same dict goes to every local subscriber, which may cache a derived
        encoding in it (the SSE frame) but must not change what is there.
        """
        members = self._members.get(channel)
        if members is None:
            members = self._members[channel] = set()
            self._transports[channel] = Counter()
            self._joining[channel] = asyncio.ensure_future(self._subscribe(channel))
        if subscriber not in members:
            members.add(subscriber)
            self._transports[channel][subscriber.transport] += 1
        joining = self._joining.get(channel)
        if joining is not None:
            await asyncio.shield(joining)

    async def _subscribe(self, channel: str) -> None:
        """Anchor the channel's offsets first, so every message after the join is accounted for."""
        try:
            await self.continuity.anchor(channel)
            if channel in self._members:
                await self.bus.subscribe(self, channel)
                if channel not in self._members:  # the last subscriber left meanwhile
                    self.bus.unsubscribe(self, channel)
        finally:
            if self._joining.get(channel) is asyncio.current_task():
                del self._joining[channel]

    def leave(self, channel: str, subscriber: ClientConnection) -> None:
        """Remove a local subscriber; the last one makes the process unsubscribe."""
        members = self._members.get(channel)
        if members is None or subscriber not in members:
            return
        members.discard(subscriber)
        self._transports[channel][subscriber.transport] -= 1
        if not members:
            del self._members[channel]
            del self._transports[channel]
            self.continuity.forget(channel)
            self.bus.unsubscribe(self, channel)

    async def history_read(
        self, channel: str, since: int | None, messages: bool = True, epoch: str | None = None
    ) -> Recovery:
        """`history.history_read` for a subscriber that has joined the channel here; without
        `messages`, only the head and whether `since` is at it.

        A channel this process has anchored at offset 0 and has seen no persisted message of
        since has no history: the answer is known without a query (most channels of a
        connect storm). A persisted message still in flight arrives after it as a live one.
        """
        if self.continuity.offsets.get(channel) == 0:
            current = self.continuity.epochs.get(channel, "")
            return Recovery(channel, 0, recovered=since == 0 and (not epoch or epoch == current), epoch=current)
        if not messages:
            head, current = await database_sync_to_async(history_position)(channel)
            same = not epoch or epoch == current
            return Recovery(channel, head, recovered=since is not None and since == head and same, epoch=current)
        return await database_sync_to_async(history_read)(channel, since, None, epoch)

    def members(self, channel: str) -> set[ClientConnection]:
        return self._members.get(channel, set())

    # -- receiving ------------------------------------------------------------------------

    def receive(self, message: dict) -> None:
        """Called by the bus for each message to this process, from any thread."""
        # Called on the loop itself: its thread, while it runs. (Asking asyncio for the running
        # loop costs a getpid system call per message on Python 3.11.)
        if threading.get_ident() == self._loop_thread and self.loop.is_running():
            self.on_message(message)
        else:
            self.loop.call_soon_threadsafe(self.on_message, message)

    def on_message(self, message: dict) -> None:
        """A bus message on this hub's loop: a publish, or a command to this process."""
        if message["type"] == "hub.publish":
            self.hub_publish(message)
            return
        handler = self._commands.get(message["type"])
        if handler is None:
            logger.warning("bus message of unknown type %r ignored", message["type"])
            return
        answer = handler(message)
        if "answer" in message:  # asked in process (the local bus)
            message["answer"].set_result(answer)
        elif "reply_to" in message and answer is not None:
            task = asyncio.ensure_future(self.bus.asend(message["reply_to"], answer))
            task.add_done_callback(_log_failure)

    def bus_reconnected(self) -> None:
        """Called by the bus after it lost and restored its connection: look for lost messages."""
        task = asyncio.ensure_future(self.continuity.check_positions(force=True))
        task.add_done_callback(_log_failure)

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
        if message["event"] == protocol.RESET_EVENT and message["offset"] == 0:
            self.continuity.reset(message["channel"], message["epoch"])
            return
        if message["offset"] is not None and not self.continuity.admit(message):
            return
        self._dispatch(message)

    def _reset(self, channel: str, epoch: str) -> None:
        """A channel's history was reset: each local subscriber is told its position is gone."""
        for subscriber in list(self._members.get(channel, ())):
            subscriber.reset(channel, epoch)

    def _dispatch(self, message: dict) -> None:
        members = self._members.get(message["channel"])
        if not members:
            return
        metrics.latencies.observe(max(0.0, time.time() - message["sent_at"]))
        for transport, count in self._transports[message["channel"]].items():
            metrics.deliveries.add(transport, count)
        # deliver() never changes membership synchronously, so the set can be iterated as is.
        for subscriber in members:
            subscriber.deliver(message)


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("bus task failed: %r", task.exception())
