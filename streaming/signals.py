"""Django signals of the realtime core (README, "Signals").

Each is sent with the transport (`"ws"` or `"sse"`) as its sender, after the fact, from a task of
its own: a slow or failing receiver delays and harms no connection (failures are logged). Sync and
async receivers are both supported. `connected`/`disconnected` and `subscribed`/`unsubscribed` are
sent once per connection across the cluster: by the process that holds it, or — for a process
that died without closing its connections — by the one process that reaps it (`reaped=True`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Sent when a WebSocket client sends `{"action": "message"}`, after the echo to the sender's own
# connections. Receivers get `connection_id`, `identity` (streaming.auth.Identity), `content` and
# `envelope` (the delivered envelope). Sync and async receivers are both supported.
client_message = Signal()

# A connection was admitted and greeted. Receivers get `connection_id`, `transport`, `identity`,
# `ip`, `info` (what the connect hook attached) and `channels` (its explicit channels at connect).
connected = Signal()

# A connection ended. `connection_id`, `transport`, `identity`, `code` (its close code) and
# `reaped` (true when a surviving process closed it for a process that died).
disconnected = Signal()

# A connection joined an explicit channel (asked for, or server-side at connect): `connection_id`,
# `transport`, `identity`, `channel`.
subscribed = Signal()

# A connection left an explicit channel (unsubscribed, lost its grant, or disconnected):
# `connection_id`, `transport`, `identity`, `channel`, `reaped`.
unsubscribed = Signal()


def fire(signal: Signal, sender: str, **kwargs: Any) -> None:
    """Send a signal from the event loop without waiting for its receivers (none: nothing happens)."""
    if not signal.receivers:
        return
    task = asyncio.ensure_future(signal.asend_robust(sender=sender, **kwargs))
    task.add_done_callback(_log_failures)


def fire_sync(signal: Signal, sender: str, **kwargs: Any) -> None:
    """Send a signal from a thread (the reaper), waiting for its receivers."""
    if not signal.receivers:
        return
    _log_results(signal.send_robust(sender=sender, **kwargs))


def _log_failures(task: asyncio.Future) -> None:
    if task.cancelled():
        return
    if task.exception() is not None:
        logger.error("sending a signal failed: %r", task.exception())
        return
    _log_results(task.result())


def _log_results(results: list[tuple[Any, Any]]) -> None:
    for receiver, result in results:
        if isinstance(result, Exception):
            logger.error("signal receiver %r failed: %r", receiver, result)
