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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from streaming import metrics
from streaming.auth import Identity
from streaming.history import history_expire
from streaming.limits import ClientLimits
from streaming.models import Connection, ServerProcess, Subscription

if TYPE_CHECKING:
    from streaming.lifecycle import ClientConnection

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0
CHUNK = 500
HISTORY_EXPIRY_SECONDS = 60.0


@dataclass
class _Pending:
    """Changes not yet written to the database."""

    opened: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: dict[str, tuple[float, int]] = field(default_factory=dict)
    channels: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed or self.channels)


def _dt(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class ConnectionRegistry:
    """Connections of this process by id, plus the machinery that mirrors them to the database."""

    def __init__(self, bus_channel: str = "") -> None:
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.bus_channel = bus_channel
        self.started_at = time.time()
        self.connections: dict[str, ClientConnection] = {}
        self.clients = ClientLimits()
        self._counts: dict[str, int] = {"ws": 0, "sse": 0}
        self._pending = _Pending()
        self._seen_flushed: dict[str, float] = {}
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
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
        self._seen_flushed.pop(connection.connection_id, None)

    def channels_changed(self, connection: ClientConnection) -> None:
        self._pending.channels[connection.connection_id] = sorted(connection.channels)

    def close_local(self, connection_id: str, code: int, reason: str) -> bool:
        connection = self.connections.get(connection_id)
        if connection is None:
            return False
        connection.close(code, reason)
        return True

    def hub_close(self, message: dict) -> None:
        """Bus command from another process: close one of our connections."""
        self.close_local(message["connection_id"], message["code"], message.get("reason", ""))

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
            "connected_at": _dt(connection.connected_at),
            "last_seen": _dt(connection.last_seen),
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
        tick = self._tick_seconds()
        next_flush = 0.0
        while True:
            try:
                await asyncio.sleep(tick)
                now = time.time()
                for connection in list(self.connections.values()):
                    connection.tick(now)
                self._export_metrics()
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + settings.REALTIME.registry_flush_interval
                    await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("registry task failed a step; continuing")

    def _export_metrics(self) -> None:
        for transport, count in self._counts.items():
            metrics.CONNECTIONS.labels(transport).set(count)
        metrics.SUBSCRIPTIONS.set(sum(len(c.channels) for c in self.connections.values()))
        metrics.deliveries.publish()

    # -- database mirror ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write pending changes, the process heartbeat, and reap dead processes when due."""
        async with self._flush_lock:
            now = time.time()
            heartbeat_due = time.monotonic() >= self._next_heartbeat
            if not self._pending and not heartbeat_due and not self._active_since_flush():
                return
            if not self._registered_process and not self._pending and not self.connections:
                return  # nothing ever connected here: no process row needed yet
            pending, self._pending = self._pending, _Pending()
            seen = self._collect_seen()
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
            self._pending.opened[connection.connection_id] = self._row(connection)
            self.channels_changed(connection)

    def _active_since_flush(self) -> bool:
        flushed = self._seen_flushed
        return any(c.last_seen > flushed.get(c.connection_id, 0) for c in self.connections.values())

    def _collect_seen(self) -> dict[str, float]:
        seen = {}
        for connection in self.connections.values():
            if connection.last_seen > self._seen_flushed.get(connection.connection_id, 0):
                seen[connection.connection_id] = connection.last_seen
                self._seen_flushed[connection.connection_id] = connection.last_seen
        return seen

    def _restore(self, pending: _Pending) -> None:
        """Put back changes whose write failed so the next flush retries them."""
        for key, value in pending.opened.items():
            self._pending.opened.setdefault(key, value)
        for key, value in pending.closed.items():
            self._pending.closed.setdefault(key, value)
        for key, value in pending.channels.items():
            self._pending.channels.setdefault(key, value)

    def _write(self, pending: _Pending, seen: dict[str, float], now: float, heartbeat: bool, expire: bool) -> None:
        try:
            with transaction.atomic():
                self._write_process(now)
                self._write_changes(pending, seen)
        except (DataError, IntegrityError, ValueError) as error:
            # A row the database refuses must not fail every later flush of this process
            # (its connections would vanish from stats and it would stop heartbeating).
            logger.error("registry batch refused (%s); writing connection by connection", error)
            self._write_each(pending, seen, now)
        if heartbeat:
            reap_dead_processes(settings.REALTIME.liveness_window, exclude=self.process_id)
        if expire:
            history_expire()
            prune_closed_connections(settings.REALTIME.closed_connection_retention)

    def _write_changes(self, pending: _Pending, seen: dict[str, float]) -> None:
        if pending.opened:
            rows = [Connection(process_id=self.process_id, **row) for row in pending.opened.values()]
            Connection.objects.bulk_create(
                rows,
                update_conflicts=True,  # a restored row (see _reopen_all) is opened again
                unique_fields=["id"],
                update_fields=["process", "last_seen", "closed_at", "close_code"],
                batch_size=CHUNK,
            )
        self._write_channels(pending.channels)
        self._write_seen(seen)
        self._write_closed(pending.closed)

    def _write_each(self, pending: _Pending, seen: dict[str, float], now: float) -> None:
        """Write each connection's changes in a transaction of its own; drop (and log) refused ones."""
        with transaction.atomic():
            self._write_process(now)
        ids = set(pending.opened) | set(pending.channels) | set(pending.closed) | set(seen)
        for connection_id in ids:
            single = _Pending(
                opened={k: v for k, v in pending.opened.items() if k == connection_id},
                closed={k: v for k, v in pending.closed.items() if k == connection_id},
                channels={k: v for k, v in pending.channels.items() if k == connection_id},
            )
            try:
                with transaction.atomic():
                    self._write_changes(single, {k: v for k, v in seen.items() if k == connection_id})
            except (DataError, IntegrityError, ValueError) as error:
                logger.error("registry row of connection %s refused and dropped: %s", connection_id, error)

    def _write_process(self, now: float) -> None:
        updated = ServerProcess.objects.filter(id=self.process_id, stopped_at__isnull=True).update(
            last_heartbeat=_dt(now)
        )
        if not updated and ServerProcess.objects.filter(id=self.process_id).update(
            last_heartbeat=_dt(now), stopped_at=None
        ):
            self._reaped = True
            return
        if not updated:
            ServerProcess.objects.create(
                id=self.process_id,
                bus_channel=self.bus_channel,
                hostname=socket.gethostname()[:255],
                pid=os.getpid(),
                started_at=_dt(self.started_at),
                last_heartbeat=_dt(now),
            )

    def _write_channels(self, channels: dict[str, list[str]]) -> None:
        if not channels:
            return
        ids = list(channels)
        for chunk in _chunks(ids):
            Subscription.objects.filter(connection_id__in=chunk).delete()
        rows = [Subscription(connection_id=cid, channel=ch) for cid, chs in channels.items() for ch in chs]
        Subscription.objects.bulk_create(rows, ignore_conflicts=True, batch_size=CHUNK)

    def _write_seen(self, seen: dict[str, float]) -> None:
        if not seen:
            return
        # One UPDATE per flush: every connection active since the last one gets the newest time.
        newest = _dt(max(seen.values()))
        for chunk in _chunks(list(seen)):
            Connection.objects.filter(id__in=chunk).update(last_seen=newest)

    def _write_closed(self, closed: dict[str, tuple[float, int]]) -> None:
        by_code: dict[int, list[str]] = {}
        for connection_id, (_, code) in closed.items():
            by_code.setdefault(code, []).append(connection_id)
        for code, ids in by_code.items():
            closed_at = _dt(max(closed[i][0] for i in ids))
            for chunk in _chunks(ids):
                Subscription.objects.filter(connection_id__in=chunk).delete()
                Connection.objects.filter(id__in=chunk, closed_at__isnull=True).update(
                    closed_at=closed_at, close_code=code
                )

    def locate(self, connection_id: str) -> str | None:
        """The bus channel of the live process holding an open connection, if any (sync)."""
        row = (
            Connection.objects.filter(
                id=connection_id,
                closed_at__isnull=True,
                process__stopped_at__isnull=True,
                process__last_heartbeat__gte=timezone.now() - timedelta(seconds=settings.REALTIME.liveness_window),
            )
            .values_list("process__bus_channel", flat=True)
            .first()
        )
        return row

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
        now = timezone.now()
        Connection.objects.filter(process_id=self.process_id, closed_at__isnull=True).update(
            closed_at=now, close_code=1001
        )
        Subscription.objects.filter(connection__process_id=self.process_id).delete()
        ServerProcess.objects.filter(id=self.process_id).update(stopped_at=now)


def reap_dead_processes(liveness_window: float, exclude: str | None = None) -> int:
    """Close the connection rows of processes whose heartbeat is older than the window (sync)."""
    now = timezone.now()
    dead = ServerProcess.objects.filter(
        stopped_at__isnull=True, last_heartbeat__lt=now - timedelta(seconds=liveness_window)
    )
    if exclude:
        dead = dead.exclude(id=exclude)
    dead_ids = list(dead.values_list("id", flat=True))
    if not dead_ids:
        return 0
    with transaction.atomic():
        Subscription.objects.filter(connection__process_id__in=dead_ids).delete()
        reaped = Connection.objects.filter(process_id__in=dead_ids, closed_at__isnull=True).update(
            closed_at=now, close_code=1006
        )
        ServerProcess.objects.filter(id__in=dead_ids).update(stopped_at=now)
    logger.warning("reaped %d connections of dead processes %s", reaped, ", ".join(dead_ids))
    return reaped


def prune_closed_connections(retention: float) -> int:
    """Delete connection rows closed longer ago than `retention` seconds, and the rows of
    processes stopped that long ago with no connection left (sync); returns the connections deleted."""
    cutoff = timezone.now() - timedelta(seconds=retention)
    _, deleted = Connection.objects.filter(closed_at__lt=cutoff).delete()
    ServerProcess.objects.filter(stopped_at__lt=cutoff, connections__isnull=True).delete()
    return deleted.get(Connection._meta.label, 0)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
