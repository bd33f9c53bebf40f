"""Bounded outbound queues.

A connection's outbox holds encoded frames until its writer task sends them. It never grows past
its limit: a full outbox means a slow consumer, which the connection answers by closing (4429).
The writer pauses while the server's write buffer is over HIGH_WATER (see `daphne_adapter.io`), so
a client that stops reading fills its outbox instead of server memory; one whose socket takes
nothing for SLOW_CONSUMER_TIMEOUT is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
DRAIN_POLL_SECONDS = 0.05


class OutboxFull(Exception):
    """The consumer is not keeping up."""


class Outbox:
    """A bounded FIFO of frames with one waiting reader (the connection's writer task)."""

    __slots__ = ("_items", "_room", "_waiter", "closed", "limit", "pending")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.closed = False
        self._items: deque[Any] = deque()
        self.pending = self._items  # the queued frames, read-only: `if outbox.pending` tests without a call
        self._waiter: asyncio.Future | None = None
        self._room: asyncio.Future | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: Any) -> None:
        """Queue a frame without blocking; raises OutboxFull at the limit."""
        if len(self._items) >= self.limit:
            raise OutboxFull
        self._items.append(frame)
        self._wake()

    def close(self) -> None:
        """No more frames: the reader gets what is queued, then an empty batch."""
        self.closed = True
        self._wake()
        self._make_room()

    async def put_paced(self, frame: Any) -> None:
        """Queue a frame, first waiting for the reader to make room (for replays, which are a burst
        the client asked for, not a sign of a slow consumer). Returns at once if closed."""
        while len(self._items) >= self.limit and not self.closed:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room
        if not self.closed:
            self.put(frame)

    def _make_room(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self) -> list[Any]:
        """Wait for frames and return all queued so far; an empty list once closed and drained."""
        while not self._items and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = list(self._items)
        self._items.clear()
        self._make_room()
        return items


async def wait_for_drain(buffered: Callable[[], int], timeout: float, low: int = LOW_WATER) -> bool:
    """Sleep until the write buffer is back under `low`; False if it is not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while buffered() > low:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    return True
