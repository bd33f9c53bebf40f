"""Handing published messages to the bus: once, and for persisted ones again after an outage.

`send` (sync code) and `asend` (the event loop) publish one encoded message; Unavailable when
the bus (Redis) refuses it. A persisted message the bus refuses is committed already: it is held
and sent again by a retry task of this process once the bus is back, handed at once to this
process's own subscribers, and recoverable from history by every other process meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streaming import metrics
from streaming.bus import get_bus
from streaming.errors import Unavailable

if TYPE_CHECKING:
    from streaming.services import Outgoing

logger = logging.getLogger(__name__)

# Persisted messages the bus refused (the oldest are dropped past the cap: they stay recoverable
# from history either way).
UNDELIVERED_MAX = 10_000
RETRY_SECONDS = 1.0
_undelivered: deque[Outgoing] = deque(maxlen=UNDELIVERED_MAX)
_retry_task: asyncio.Task | None = None

# Callbacks that see every message handed to the bus (`streaming.testing` records with them). Empty
# outside tests: a delivery pays one truthiness check for them.
recorders: list[Callable[[Outgoing], None]] = []


def send(outgoing: Outgoing) -> None:
    """Publish from sync code (a thread), with no hop to an event loop."""
    message = outgoing.bus_message()
    try:
        get_bus().publish(outgoing.channel, message)
    except Unavailable as error:
        _refused(outgoing, message, error)
        raise
    _count(outgoing)


async def asend(outgoing: Outgoing) -> None:
    """Publish from the event loop."""
    message = outgoing.bus_message()
    try:
        await get_bus().apublish(outgoing.channel, message)
    except Unavailable as error:
        _refused(outgoing, message, error)
        raise
    _count(outgoing)


def send_committed_many(outgoings: list[Outgoing]) -> None:
    """Deliver committed messages in order (an `on_commit` callback); held for retry if the bus is down."""
    for outgoing in outgoings:
        send_committed(outgoing)


async def asend_committed_many(outgoings: list[Outgoing]) -> None:
    """Deliver committed messages in order, in one round trip to the bus where it has them."""
    messages = [(outgoing.channel, outgoing.bus_message()) for outgoing in outgoings]
    try:
        await get_bus().apublish_many(messages)
    except Unavailable:  # who of them got through is unknown: send each again (duplicates are dropped)
        for outgoing in outgoings:
            await asend_committed(outgoing)
        return
    for outgoing in outgoings:
        _count(outgoing)


def send_committed(outgoing: Outgoing) -> None:
    """Deliver a committed message (an `on_commit` callback): held for retry if the bus is down."""
    try:
        send(outgoing)
    except Unavailable:
        _log_held(outgoing)


async def asend_committed(outgoing: Outgoing) -> None:
    try:
        await asend(outgoing)
    except Unavailable:
        _log_held(outgoing)


def _count(outgoing: Outgoing) -> None:
    """A message reached the bus: counted, and shown to the recorders of tests if there are any."""
    metrics.published.add("true" if outgoing.envelope["offset"] is not None else "false")
    if recorders:
        for record in tuple(recorders):
            record(outgoing)


def _refused(outgoing: Outgoing, message: dict[str, Any], error: Unavailable) -> None:
    metrics.BUS_FAILURES.inc()
    logger.warning("bus publish to %s failed: %r", outgoing.channel, error.__cause__ or error)
    if outgoing.envelope["offset"] is None:
        return
    from streaming.runtime import all_runtimes

    _undelivered.append(outgoing)
    hubs = [runtime.hub for runtime in all_runtimes() if runtime.hub.loop is not None]
    for hub in hubs:  # this process's own subscribers need not wait for the bus
        hub.receive(message)
    if hubs:
        hubs[0].loop.call_soon_threadsafe(_start_retry)


def _start_retry() -> None:
    global _retry_task
    if _retry_task is None or _retry_task.done():
        _retry_task = asyncio.get_running_loop().create_task(_retry_loop(), name="streaming-bus-retry")


async def _retry_loop() -> None:
    while _undelivered:
        await asyncio.sleep(RETRY_SECONDS)
        sent = await aretry_undelivered()
        if sent:
            logger.info("bus is back: delivered %d persisted message(s) held during the outage", sent)


async def aretry_undelivered() -> int:
    """Send held persisted messages in order; stops at the first failure. When the retry sends one
    again, this process's hub drops it as already dispatched (continuity)."""
    sent = 0
    while _undelivered:
        outgoing = _undelivered[0]
        try:
            await get_bus().apublish(outgoing.channel, outgoing.bus_message())
        except Unavailable:
            break
        _undelivered.popleft()
        _count(outgoing)
        sent += 1
    return sent


def _log_held(outgoing: Outgoing) -> None:
    logger.warning(
        "persisted message %s (%s#%s) not delivered live yet: the bus is down; it will be sent when it is back",
        outgoing.envelope["id"], outgoing.channel, outgoing.envelope["offset"],
    )  # fmt: skip
