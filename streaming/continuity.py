"""Gapless, ordered live delivery of persisted messages, per process and channel.

Persisted messages carry gapless per-channel offsets, so the hub can tell when the bus lost one
(a publish during a Redis outage, or while this process was still resubscribing) or delivered two
out of order (concurrent publishers on different processes). Before fanning out a persisted
message the hub asks `Continuity.admit`: the next offset goes straight through, an older one is a
duplicate and is dropped, and a jump starts one recovery for the whole process — the missing range
is read from history once and dispatched in order, followed by what arrived meanwhile. A periodic
position check compares each channel's newest offset in the database with the last one dispatched,
so a lost message with nothing published after it is recovered too (at once when the channel is a
quarter of its history behind, as in a bus outage, before history prunes what is missing). When the process joins a
channel it first anchors the channel at its current head (`anchor`), so even the very first
messages after a join are recoverable if the bus loses them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

from streaming import metrics, protocol
from streaming.history import history_heads, history_read
from streaming.namespaces import options

logger = logging.getLogger(__name__)

Dispatch = Callable[[dict[str, Any]], None]


class Continuity:
    """Last dispatched offset per channel, and the recoveries that fill gaps."""

    def __init__(
        self,
        dispatch: Dispatch,
        joined: Callable[[str], bool] = lambda channel: True,
        on_reset: Callable[[str, str], None] = lambda channel, epoch: None,
    ) -> None:
        self.dispatch = dispatch
        self.joined = joined  # whether the process still has subscribers of a channel
        self.on_reset = on_reset  # a channel's history was reset: its offsets start again
        self.offsets: dict[str, int] = {}
        self.epochs: dict[str, str] = {}  # the epoch of each channel's offsets ("": no history yet)
        self._recovering: dict[str, list[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stalled: dict[str, int] = {}  # channel → last offset seen behind the database head
        self._anchoring: tuple[set[str], asyncio.Future] | None = None

    async def anchor(self, channel: str) -> None:
        """Take the channel's history head as dispatched; call before the process joins its group.

        Every offset after the anchor is one a subscriber of this process must see: if the bus
        loses it (a Redis outage just after the join, or a publisher retrying before this process
        has resubscribed) the position check finds the gap even though no message of the channel
        ever arrived here. Channels anchored in the same loop iteration share one query; a
        database error leaves the channel unanchored (recovery then starts at its first message).
        """
        if self._anchoring is None:
            self._anchoring = (set(), asyncio.get_running_loop().create_future())
            self._start_task(self._read_anchors())
        channels, done = self._anchoring
        channels.add(channel)
        await asyncio.shield(done)

    async def _read_anchors(self) -> None:
        await asyncio.sleep(0)  # let the joins of this loop iteration join the batch
        assert self._anchoring is not None
        channels, done = self._anchoring
        self._anchoring = None
        try:
            heads = await database_sync_to_async(history_heads)(sorted(channels))
        except Exception:
            logger.exception("reading the history heads of %d joined channel(s) failed", len(channels))
        else:
            for channel in channels:
                if self.joined(channel):
                    head, epoch = heads.get(channel, (0, ""))
                    self.offsets.setdefault(channel, head)
                    self.epochs.setdefault(channel, epoch)
        finally:
            done.set_result(None)

    def admit(self, message: dict[str, Any]) -> bool:
        """True if a persisted message is the channel's next one and may be dispatched now."""
        channel, offset = message["channel"], message["offset"]
        epoch = message.get("epoch")
        if epoch and epoch != self.epochs.get(channel, epoch):
            self._epoch_changed(channel, epoch)
        pending = self._recovering.get(channel)
        if pending is not None:
            pending.append(message)
            return False
        last = self.offsets.get(channel)
        if last is not None:
            if offset <= last:
                return False  # dispatched already (recovered, or sent again after an outage)
            if offset > last + 1:
                self._recovering[channel] = [message]
                self._start(channel, offset - 1)
                return False
        self.offsets[channel] = offset
        return True

    def forget(self, channel: str) -> None:
        """The process has no subscriber of the channel any more."""
        self.offsets.pop(channel, None)
        self.epochs.pop(channel, None)
        self._stalled.pop(channel, None)

    def reset(self, channel: str, epoch: str) -> None:
        """The channel's history was reset to offset 0 under `epoch` (a reset message on the bus)."""
        if channel in self.offsets and self.epochs.get(channel) != epoch:
            self._epoch_changed(channel, epoch)

    def _epoch_changed(self, channel: str, epoch: str) -> None:
        """Offsets of a new epoch: from 0 again. A channel that had none ("") just takes it; one
        whose history was reset (or deleted and begun again) tells its subscribers."""
        known = self.epochs.get(channel)
        self.epochs[channel] = epoch
        if not known:
            return
        logger.info("%s: history reset (epoch %s -> %s); offsets start again", channel, known, epoch)
        self.offsets[channel] = 0
        self._recovering.pop(channel, None)
        self._stalled.pop(channel, None)
        self.on_reset(channel, epoch)

    def _start(self, channel: str, upto: int) -> None:
        self._start_task(self._recover(channel, upto))

    def _start_task(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, channel: str, upto: int) -> None:
        """Dispatch offsets after the last one up to `upto` from history, then the held messages."""
        try:
            while True:
                await self._fill(channel, upto)
                upto = self._release(channel)
                if upto is None:
                    return
        except Exception:
            logger.exception("recovering offsets of %s failed; releasing what is held", channel)
            for message in sorted(self._recovering.pop(channel, []), key=lambda m: m["offset"]):
                if message["offset"] > self.offsets.get(channel, 0):
                    self.offsets[channel] = message["offset"]
                    self.dispatch(message)

    async def _fill(self, channel: str, upto: int) -> None:
        last = self.offsets.get(channel, 0)
        if upto <= last:
            return
        missing, more = 0, True
        while more and last < upto:  # page by page: a page is bounded in bytes
            recovery = await database_sync_to_async(history_read)(channel, last, upto - last)
            more = recovery.has_more and bool(recovery.messages)
            for envelope in recovery.messages:
                offset = envelope["offset"]
                if last < offset <= upto:
                    missing += offset - last - 1
                    self.dispatch(
                        protocol.bus_message(
                            envelope["channel"], protocol.encode(envelope), envelope["offset"], envelope["type"]
                        )
                    )
                    last = offset
        missing += upto - last
        if missing:
            metrics.UNRECOVERABLE.inc(missing)
            logger.warning(
                "%s: %d offset(s) up to %d are no longer in history; delivered without them", channel, missing, upto
            )
        else:
            logger.info("%s: recovered offsets up to %d from history", channel, upto)
        self.offsets[channel] = upto

    def _release(self, channel: str) -> int | None:
        """Dispatch held messages in order; the offset to fill up to if another gap remains."""
        held = sorted(self._recovering.pop(channel, []), key=lambda m: m["offset"])
        last = self.offsets.get(channel, 0)
        for index, message in enumerate(held):
            offset = message["offset"]
            if offset <= last:
                continue
            if offset > last + 1:
                self._recovering[channel] = held[index:]
                self.offsets[channel] = last
                return offset - 1
            self.dispatch(message)
            last = offset
        self.offsets[channel] = last
        return None

    async def check_positions(self, force: bool = False) -> None:
        """Recover channels whose database head stayed ahead of what was dispatched; with `force`
        (the bus was down) at once, without waiting a second check for messages in flight."""
        channels = [c for c in self.offsets if c not in self._recovering]
        if not channels:
            return
        heads = await database_sync_to_async(history_heads)(channels)
        # Far behind is lost for sure (a bus outage); waiting another check could let history
        # prune what is missing.
        for channel, (head, epoch) in heads.items():
            if epoch and channel not in self._recovering and epoch != self.epochs.get(channel, epoch):
                self._epoch_changed(channel, epoch)  # a reset whose message the bus lost
            far = max(1, options(channel).history_size // 4)
            last = self.offsets.get(channel)
            if last is None or head <= last or channel in self._recovering:
                self._stalled.pop(channel, None)
                continue
            if force or self._stalled.get(channel) == last or head - last >= far:  # lost, not in flight
                self._stalled.pop(channel, None)
                self._recovering[channel] = []
                self._start(channel, head)
            else:
                self._stalled[channel] = last

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
