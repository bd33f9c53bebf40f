"""The realtime machinery of one server process: its hub and its connection registry.

There is one `Runtime` per event loop (a server process runs one loop; tests run one per test),
created on first use by whatever needs it — a connecting WebSocket, an SSE stream, an API call
that must reach a local connection.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from django.conf import settings

from streaming.hub import Hub
from streaming.registry import ConnectionRegistry


class Runtime:
    """The hub and registry of this process, started together."""

    def __init__(self) -> None:
        self.hub = Hub()
        self.registry = ConnectionRegistry()
        self._started = False
        self._lock = asyncio.Lock()

    @property
    def config(self) -> Any:
        return settings.REALTIME

    async def start(self) -> Runtime:
        """Join the bus and start the per-process task (idempotent)."""
        if not self._started:
            async with self._lock:
                if not self._started:
                    self.registry.bus_channel = await self.hub.start()
                    self.hub.on("hub.close", self.registry.hub_close)
                    self.registry.start()
                    self._started = True
        return self

    async def stop(self) -> None:
        await self.registry.stop()
        await self.hub.stop()
        self._started = False


_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = weakref.WeakKeyDictionary()


def get_runtime() -> Runtime:
    """The runtime of the running event loop (created, not started, on first call)."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        runtime = _runtimes[loop] = Runtime()
    return runtime


def running_runtime() -> Runtime | None:
    """The runtime of the running event loop if one was created (a server process), else None."""
    return _runtimes.get(asyncio.get_running_loop())


async def start_runtime() -> Runtime:
    return await get_runtime().start()
