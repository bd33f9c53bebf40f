"""The live connections of this process, mirrored to the database in batches.

Each process keeps its connections in memory and writes what changed (opened, closed, channel
sets, last-seen) to the database once per REGISTRY_FLUSH_INTERVAL, in one transaction — never once
per message. Its `ServerProcess` row carries a heartbeat; a process whose heartbeat is older than
the liveness window is dead, and any survivor closes its connection rows (no ghosts).
One task per process drives heartbeats to clients, idle checks, flushing and reaping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings

from streaming import metrics, signals
from streaming import registry_rows as rows
from streaming.auth import Identity
from streaming.history import history_expire, history_prune_heads
from streaming.limits import ClientLimits
from streaming.registry_rows import Pending, timestamp

if TYPE_CHECKING:
    from streaming.lifecycle import ClientConnection

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
HISTORY_EXPIRY_SECONDS = 60.0
SEEN_WRITE_SECONDS = 60.0


class ConnectionRegistry:
    """Connections of this process by id, plus the machinery that mirrors them to the database."""

    def __init__(self, bus_channel: str = "") -> None:
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.bus_channel = bus_channel
        self.started_at = time.time()
        self.connections: dict[str, ClientConnection] = {}
        self.clients = ClientLimits()
        self._counts: dict[str, int] = {"ws": 0, "sse": 0}
        self._pending = Pending()
        self._seen: set[str] = set()  # connections with frames since their last_seen was written
        self._next_seen_write = 0.0
        self._wheel: dict[int, list[ClientConnection]] = {}  # tick number → connections due then
        self._subscriptions = 0  # explicit channels of all connections (the metric)
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._tick = self._tick_seconds()
        self._inflight: asyncio.Future | None = None
        self._registered_process = False
        self._next_heartbeat = 0.0
        self._next_expiry = time.monotonic() + HISTORY_EXPIRY_SECONDS
        self._failing_since: float | None = None  # monotonic time of the first failed flush in a row
        self._reaped = False  # set by a write that found this process reaped by a peer

    # -- local state ------------------------------------------------------------------------

    def count(self, transport: str) -> int:
        return self._counts.get(transport, 0)

    def refusal(self, identity: Identity, ip: str | None) -> str | None:
        """Why this process refuses one more connection of this client (per-user/per-IP limits)."""
        config = settings.REALTIME
        return self.clients.refusal(
            identity.user_id, ip, config.max_connections_per_user, config.max_connections_per_ip
        )

    def register(self, connection: ClientConnection) -> None:
        self.connections[connection.connection_id] = connection
        self.clients.opened(connection.identity.user_id, connection.ip)
        self._counts[connection.transport] = self._counts.get(connection.transport, 0) + 1
        self._pending.opened[connection.connection_id] = self._row(connection)
        connection.subscriptions_counted = 0
        self.schedule(connection)
        if connection.channels:
            self.channels_changed(connection)

    def unregister(self, connection: ClientConnection, code: int) -> None:
        if self.connections.pop(connection.connection_id, None) is None:
            return
        self.clients.closed(connection.identity.user_id, connection.ip)
        self._counts[connection.transport] -= 1
        metrics.record_disconnect(code)
        self._pending.closed[connection.connection_id] = (time.time(), code)
        self._pending.channels.pop(connection.connection_id, None)
        self._seen.discard(connection.connection_id)
        self._subscriptions -= connection.subscriptions_counted

    def channels_changed(self, connection: ClientConnection) -> None:
        self._pending.channels[connection.connection_id] = sorted(connection.channels)
        self._subscriptions += len(connection.channels) - connection.subscriptions_counted
        connection.subscriptions_counted = len(connection.channels)

    def seen(self, connection: ClientConnection) -> None:
        """A connection showed life (a frame): its last_seen goes out with the next flush."""
        self._seen.add(connection.connection_id)

    def schedule(self, connection: ClientConnection) -> None:
        """Call `connection.tick` at the time it asks for (`next_tick`), to the tick."""
        slot = int(connection.next_tick() / self._tick)
        connection.tick_slot = slot
        self._wheel.setdefault(slot, []).append(connection)

    def close_local(self, connection_id: str, code: int, reason: str) -> bool | None:
        """Close a connection of this process: True if closed now, False if it was closing
        already, None if it is not here."""
        connection = self.connections.get(connection_id)
        if connection is None:
            return None
        if connection.closing:
            return False
        connection.close(code, reason)
        return True

    def hub_close(self, message: dict) -> dict:
        """Bus command from another process: close one of our connections; answers whether it did."""
        closed = self.close_local(message["connection_id"], message["code"], message.get("reason", ""))
        return {"type": "hub.closed", "closed": bool(closed)}

    def _row(self, connection: ClientConnection) -> dict[str, Any]:
        identity = connection.identity
        return {
            "id": connection.connection_id,
            "transport": connection.transport,
            "user_id": identity.user_id,
            # Free text from a token claim and a header: what a text column cannot hold is dropped.
            "user_name": (identity.name or "").replace("\x00", "")[:150],
            "auth": identity.kind,
            "ip": connection.ip,
            "user_agent": connection.user_agent.replace("\x00", "")[:512],
            "connected_at": timestamp(connection.connected_at),
            "last_seen": timestamp(connection.last_seen),
        }

    # -- the process task ---------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="streaming-registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)

    def _tick_seconds(self) -> float:
        config = settings.REALTIME
        candidates = [
            TICK_SECONDS,
            config.websocket_heartbeat_interval / 4,
            config.sse_heartbeat_interval / 4,
            config.registry_flush_interval,
        ]
        if config.websocket_disconnect_timeout:
            candidates.append(config.websocket_disconnect_timeout / 4)
        return max(0.02, min(candidates))

    async def _run(self) -> None:
        next_flush = 0.0
        flushing: asyncio.Future | None = None
        try:
            while True:
                try:
                    await asyncio.sleep(self._tick)
                    self._tick_due(time.time())
                    self._export_metrics()
                    # The flush waits for the database on its own: heartbeats, idle closes and
                    # token expiry keep their time while it waits (a database outage, a lock).
                    if time.monotonic() >= next_flush and (flushing is None or flushing.done()):
                        next_flush = time.monotonic() + settings.REALTIME.registry_flush_interval
                        flushing = asyncio.ensure_future(self._periodic_flush())
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("registry task failed a step; continuing")
        finally:
            if flushing is not None:
                flushing.cancel()

    async def _periodic_flush(self) -> None:
        try:
            await self.flush(periodic=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("registry flush failed; retrying at the next one")

    def _tick_due(self, now: float) -> None:
        """Tick the connections whose time has come (heartbeat, idleness, token expiry): a
        process with 10,000 idle connections touches a few hundred a second, not all of them."""
        current = int(now / self._tick)
        for slot in [slot for slot in self._wheel if slot <= current]:
            for connection in self._wheel.pop(slot):
                if connection.tick_slot != slot or connection.connection_id not in self.connections:
                    continue  # rescheduled since, or gone
                connection.tick(now)
                if not connection.closing:
                    self.schedule(connection)

    def _export_metrics(self) -> None:
        for transport, count in self._counts.items():
            metrics.CONNECTIONS.labels(transport).set(count)
        metrics.SUBSCRIPTIONS.set(self._subscriptions)
        metrics.publish_tallies()

    # -- database mirror ------------------------------------------------------------------------

    async def flush(self, periodic: bool = False) -> None:
        """Write pending changes, the process heartbeat, and reap dead processes when due.

        Connections' last_seen times are only shown (liveness is the process heartbeat's): the
        periodic flush writes them every SEEN_WRITE_SECONDS, an explicit one (a read of the API) always.
        """
        async with self._flush_lock:
            now = time.time()
            heartbeat_due = time.monotonic() >= self._next_heartbeat
            seen_due = not periodic or time.monotonic() >= self._next_seen_write
            if not self._pending and not heartbeat_due and not (seen_due and self._seen):
                return
            if not self._registered_process and not self._pending and not self.connections:
                # Nothing ever connected here: no process row needed yet, but this process still
                # takes its turn at reaping dead peers (it may be the only survivor).
                if heartbeat_due:
                    self._next_heartbeat = time.monotonic() + settings.REALTIME.liveness_window / 4
                    await database_sync_to_async(reap_dead)(settings.REALTIME.liveness_window, self.process_id)
                return
            pending, self._pending = self._pending, Pending()
            seen = self._collect_seen() if seen_due else {}
            if seen_due:
                self._next_seen_write = time.monotonic() + SEEN_WRITE_SECONDS
            expire = time.monotonic() >= self._next_expiry
            # Shielded: a cancelled flush (shutdown) still lets the thread finish its transaction,
            # and stop() waits for it, so nobody reads or tears down the database mid-write.
            self._inflight = asyncio.ensure_future(
                database_sync_to_async(self._write)(pending, seen, now, heartbeat_due, expire)
            )
            try:
                await asyncio.shield(self._inflight)
            except Exception:
                self._restore(pending)
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                raise
            self._failing_since = None
            self._registered_process = True
            if self._reaped:
                self._reaped = False
                self._reopen_all()
            if heartbeat_due:
                self._next_heartbeat = time.monotonic() + settings.REALTIME.liveness_window / 4
            if expire:
                self._next_expiry = time.monotonic() + HISTORY_EXPIRY_SECONDS

    def health(self) -> str | None:
        """Why this process's registry is unhealthy (its writes have failed for a while), else None."""
        if self._failing_since is None:
            return None
        failing = time.monotonic() - self._failing_since
        if failing < max(2.0, 3 * settings.REALTIME.registry_flush_interval):
            return None
        return f"registry writes failing for {failing:.0f} s"

    def _reopen_all(self) -> None:
        """A peer reaped this process while it lived (it missed heartbeats): write every live
        connection again, so that stats, lists, presence and DELETE see them."""
        logger.warning("this process was reaped by a peer; restoring its %d connections", len(self.connections))
        for connection in self.connections.values():
            connection.reaped = True  # the peer told the cluster (signals) it ended: not told twice
            self._pending.opened[connection.connection_id] = self._row(connection)
            self.channels_changed(connection)

    def _collect_seen(self) -> dict[str, float]:
        seen, self._seen = self._seen, set()
        connections = self.connections
        return {cid: connections[cid].last_seen for cid in seen if cid in connections}

    def _restore(self, pending: Pending) -> None:
        """Put back changes whose write failed so the next flush retries them."""
        for key, value in pending.opened.items():
            self._pending.opened.setdefault(key, value)
        for key, value in pending.closed.items():
            self._pending.closed.setdefault(key, value)
        for key, value in pending.channels.items():
            self._pending.channels.setdefault(key, value)

    @property
    def process(self) -> rows.ProcessRecord:
        return rows.ProcessRecord(self.process_id, self.bus_channel, self.started_at)

    def _write(self, pending: Pending, seen: dict[str, float], now: float, heartbeat: bool, expire: bool) -> None:
        if rows.rows_write(self.process, pending, seen, now):
            self._reaped = True
        if heartbeat:
            reap_dead(settings.REALTIME.liveness_window, exclude=self.process_id)
        if expire:
            history_expire()
            history_prune_heads()
            rows.prune_closed_connections(settings.REALTIME.closed_connection_retention)

    def locate(self, connection_id: str) -> str | None:
        """The bus channel of the live process holding an open connection, if any (sync)."""
        return rows.connection_locate(connection_id, settings.REALTIME.liveness_window)

    async def shutdown(self, code: int, reason: str, grace: float = 2.0) -> None:
        """Close every local connection, wait for them to go, and mark this process stopped."""
        for connection in list(self.connections.values()):
            connection.close(code, reason)
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.stop()
        try:
            await self.flush()
            await database_sync_to_async(self._mark_stopped)()
        except Exception:
            logger.exception("could not record the shutdown of %s", self.process_id)

    def _mark_stopped(self) -> None:
        rows.process_mark_stopped(self.process_id)


def reap_dead(liveness_window: float, exclude: str | None = None) -> int:
    """Close the connections of dead processes (sync) and send `unsubscribed` and `disconnected`
    for each, once across the cluster (README, "Signals"); returns how many were closed."""
    reaped = rows.reap_dead_processes(liveness_window, exclude=exclude)
    for connection in reaped:
        identity = Identity(kind=connection.auth, user_id=connection.user_id, name=connection.user_name or None)
        for channel in connection.channels:
            signals.fire_sync(
                signals.unsubscribed, connection.transport, connection_id=connection.id,
                transport=connection.transport, identity=identity, channel=channel, reaped=True,
            )  # fmt: skip
        signals.fire_sync(
            signals.disconnected, connection.transport, connection_id=connection.id,
            transport=connection.transport, identity=identity, code=1006, reaped=True,
        )  # fmt: skip
    return len(reaped)
