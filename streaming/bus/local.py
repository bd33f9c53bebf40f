"""The bus of one process: its hubs, found by channel. The default when REDIS_URL is not set."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from asgiref.sync import sync_to_async

from streaming.errors import Unavailable

if TYPE_CHECKING:
    from streaming.hub import Hub

logger = logging.getLogger(__name__)


class LocalBus:
    """Channel → the hubs of this process subscribed to it (one per event loop; a server runs one).

    A hub receives on its own loop: a publish made there is dispatched at once, in the
    publisher's call; one made on another thread (sync code) is handed to the hub's loop.
    """

    _instance: ClassVar[LocalBus | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._channels: dict[str, set[Hub]] = {}
        self._hubs: dict[str, Hub] = {}
        self._lock = threading.Lock()  # hubs attach from their loops; publishers come from any thread
        self._counter = 0

    @classmethod
    def instance(cls) -> LocalBus:
        """The process's bus."""
        if cls._instance is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls()
        return cls._instance

    # -- the hub side ---------------------------------------------------------------------------

    async def attach(self, hub: Hub) -> str:
        """Register a hub; returns its address for commands."""
        with self._lock:
            self._counter += 1
            address = f"local:{os.getpid()}:{self._counter}"
            self._hubs[address] = hub
        return address

    async def detach(self, hub: Hub) -> None:
        with self._lock:
            self._hubs = {address: other for address, other in self._hubs.items() if other is not hub}
            for hubs in self._channels.values():
                hubs.discard(hub)
            self._channels = {channel: hubs for channel, hubs in self._channels.items() if hubs}

    async def subscribe(self, hub: Hub, channel: str) -> None:
        with self._lock:
            self._channels.setdefault(channel, set()).add(hub)

    def unsubscribe(self, hub: Hub, channel: str) -> None:
        with self._lock:
            hubs = self._channels.get(channel)
            if hubs is not None:
                hubs.discard(hub)
                if not hubs:
                    del self._channels[channel]

    # -- the publisher side ---------------------------------------------------------------------

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        """Hand a bus message to every hub subscribed to its channel (any thread)."""
        hubs = self._channels.get(channel)
        if hubs:
            for hub in tuple(hubs):
                hub.receive(message)
        elif not self._hubs:
            self._check_served(message)

    async def apublish(self, channel: str, message: dict[str, Any]) -> None:
        hubs = self._channels.get(channel)
        if hubs:
            for hub in tuple(hubs):
                hub.receive(message)
        elif not self._hubs:
            await sync_to_async(self._check_served)(message)

    async def apublish_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        for channel, message in messages:
            await self.apublish(channel, message)

    def _check_served(self, message: dict[str, Any]) -> None:
        """A process with no hub (a shell, a management command, a worker) publishing on the local
        bus reaches nobody; if a server is running elsewhere, say so instead of pretending."""
        from streaming.selectors import live_processes

        if message["offset"] is not None:
            return  # persisted: the servers' position checks deliver it within seconds
        if live_processes().exists():
            raise Unavailable(
                "This process runs no server and REDIS_URL is not set, so its publishes cannot reach the "
                "server process's clients: set REDIS_URL (the same for every process), or publish with "
                "persist=True (delivered within seconds), or through the HTTP API."
            )

    async def asend(self, address: str, command: dict[str, Any]) -> None:
        hub = self._hubs.get(address)
        if hub is None:
            raise Unavailable(f"No server process at {address!r}.")
        hub.receive(command)

    async def arequest(self, address: str, command: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send a command to one hub and wait for its answer (None if it gives none in time)."""
        hub = self._hubs.get(address)
        if hub is None:
            return None
        answer: concurrent.futures.Future = concurrent.futures.Future()
        hub.receive({**command, "answer": answer})
        try:
            return await asyncio.wait_for(asyncio.wrap_future(answer), timeout)
        except TimeoutError:
            return None

    async def aping(self) -> None:
        """Nothing to reach: the local bus is up whenever the process is."""
