"""The realtime machinery of one server process: its hub and its connection registry.

There is one `Runtime` per event loop (a server process runs one loop; tests run one per test),
created on first use by whatever needs it — a connecting WebSocket, an SSE stream, an API call
that must reach a local connection. A server starts it before it takes connections (`warm_up`):
daphne through `streaming.daphne_adapter.server.GracefulServer`, other ASGI servers through the lifespan
protocol (`lifespan_app`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from asgiref.sync import async_to_sync

from streaming.hub import Hub
from streaming.registry import ConnectionRegistry

logger = logging.getLogger(__name__)

WARM_UP_SECONDS = 10.0


class Runtime:
    """The hub and registry of this process, started together."""

    def __init__(self) -> None:
        self.registry = ConnectionRegistry()
        self.hub = Hub(commands={"hub.close": self.registry.hub_close})
        self._started = False
        self._lock = asyncio.Lock()

    async def start(self) -> Runtime:
        """Join the bus and start the per-process task (idempotent)."""
        if not self._started:
            async with self._lock:
                if not self._started:
                    self.registry.bus_channel = await self.hub.start()
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


def all_runtimes() -> list[Runtime]:
    """Every runtime of this process (a server has one; tests one per event loop)."""
    return list(_runtimes.values())


def running_runtime() -> Runtime | None:
    """The runtime of the running event loop if one was created (a server process), else None."""
    return _runtimes.get(asyncio.get_running_loop())


def registry_health() -> str | None:
    """Why a runtime of this process cannot mirror its connections to the database, else None."""
    for runtime in list(_runtimes.values()):
        problem = runtime.registry.health()
        if problem is not None:
            return problem
    return None


def flush_local_registry() -> None:
    """Write this process's pending registry changes so reads see its own connections (sync code)."""

    async def flush() -> None:
        await get_runtime().registry.flush()

    async_to_sync(flush)()


async def start_runtime() -> Runtime:
    return await get_runtime().start()


async def warm_up(timeout: float = WARM_UP_SECONDS) -> bool:
    """Start this loop's runtime now, before the server takes connections; True if it started.

    Started lazily, the runtime joined the bus inside the first handshakes: under a reconnect
    storm to a fresh process on Redis, each of its round trips waited a whole loop iteration
    behind hundreds of handshakes, and the connections queued behind it passed daphne's 5 s
    connect timeout (bench/OPTIMISATIONS.md, step 8). If the bus or the database is down now,
    the failure is logged and the first connection tries again.
    """
    try:
        await asyncio.wait_for(start_runtime(), timeout)
    except Exception as error:  # a server must come up without its bus; clients are told per connection
        logger.warning(
            "runtime not started at start-up (%s: %s); the first connection retries", type(error).__name__, error
        )
        return False
    return True


async def lifespan_app(scope: dict, receive: Any, send: Any) -> None:
    """The ASGI lifespan protocol (uvicorn, hypercorn): warm the runtime up at start-up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await warm_up()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
