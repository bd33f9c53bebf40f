"""Bounded outbound queues, and the write-buffer probe that gives daphne backpressure.

A connection's outbox holds encoded frames until its writer task sends them. It never grows past
its limit: a full outbox means a slow consumer, which the connection answers by closing (4429).
daphne accepts every send at once into Twisted's write buffer, so on its own a client that stops
reading would grow server memory without bound; the probe reads that buffer's size so the writer
can wait while it is over the high-water mark and let the outbox fill instead.
"""

from __future__ import annotations

import asyncio
import functools
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

    __slots__ = ("_items", "_waiter", "closed", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.closed = False
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future | None = None

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
        return items


def unwrap_send(send: Any) -> Any:
    """The server's own `send` under middleware wrappers (channels' session middleware keeps it
    as `real_send`). Frames sent after the handshake need none of the wrappers' work."""
    for _ in range(8):
        inner = getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            break
        send = inner
    return send


def write_buffer_probe(send: Any) -> Callable[[], int] | None:
    """A function returning the bytes waiting in daphne's socket write buffer, else None.

    daphne hands the application `functools.partial(server.handle_reply, protocol)` as `send`;
    the protocol's Twisted transport keeps unsent bytes in `dataBuffer` and `_tempDataBuffer`.
    Other servers (uvicorn) apply backpressure in `send` itself and need no probe.
    """
    send = unwrap_send(send)
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "dataBuffer") or not hasattr(transport, "_tempDataLen"):
        return None

    def buffered() -> int:
        current = protocol.transport
        if current is None:
            return 0
        return len(current.dataBuffer) - current.offset + current._tempDataLen

    return buffered


async def wait_for_drain(buffered: Callable[[], int]) -> None:
    """Sleep until the write buffer is back under the low-water mark."""
    while buffered() > LOW_WATER:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
