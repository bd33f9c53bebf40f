"""The connection registry's rows: batched writes of what changed, process heartbeats, reaping of
dead processes, retention, and finding which process holds a connection. Synchronous (ORM)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from streaming.models import Connection, ServerProcess, Subscription

logger = logging.getLogger(__name__)

CHUNK = 500


@dataclass
class Pending:
    """Changes of a process's connections not yet written to the database."""

    opened: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: dict[str, tuple[float, int]] = field(default_factory=dict)
    channels: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed or self.channels)

    def only(self, connection_id: str) -> Pending:
        """The changes of one connection."""
        return Pending(
            opened={k: v for k, v in self.opened.items() if k == connection_id},
            closed={k: v for k, v in self.closed.items() if k == connection_id},
            channels={k: v for k, v in self.channels.items() if k == connection_id},
        )


@dataclass(frozen=True)
class ProcessRecord:
    """What the `ServerProcess` row of this process says."""

    id: str
    bus_channel: str
    started_at: float


def timestamp(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def rows_write(process: ProcessRecord, pending: Pending, seen: dict[str, float], now: float) -> bool:
    """Write the process heartbeat and the pending changes in one transaction; True when the
    heartbeat found the process reaped by a peer (its connections must be written again)."""
    try:
        with transaction.atomic():
            reaped = _write_process(process, now)
            _write_changes(process.id, pending, seen)
    except (DataError, IntegrityError, ValueError) as error:
        # A row the database refuses must not fail every later flush of this process
        # (its connections would vanish from stats and it would stop heartbeating).
        logger.error("registry batch refused (%s); writing connection by connection", error)
        return _write_each(process, pending, seen, now)
    return reaped


def _write_each(process: ProcessRecord, pending: Pending, seen: dict[str, float], now: float) -> bool:
    """Write each connection's changes in a transaction of its own; drop (and log) refused ones."""
    with transaction.atomic():
        reaped = _write_process(process, now)
    for connection_id in set(pending.opened) | set(pending.channels) | set(pending.closed) | set(seen):
        try:
            with transaction.atomic():
                _write_changes(
                    process.id, pending.only(connection_id), {k: v for k, v in seen.items() if k == connection_id}
                )
        except (DataError, IntegrityError, ValueError) as error:
            logger.error("registry row of connection %s refused and dropped: %s", connection_id, error)
    return reaped


def _write_process(process: ProcessRecord, now: float) -> bool:
    """The heartbeat; True if the row was marked stopped by a peer (cleared here)."""
    updated = ServerProcess.objects.filter(id=process.id, stopped_at__isnull=True).update(last_heartbeat=timestamp(now))
    if updated:
        return False
    if ServerProcess.objects.filter(id=process.id).update(last_heartbeat=timestamp(now), stopped_at=None):
        return True
    ServerProcess.objects.create(
        id=process.id,
        bus_channel=process.bus_channel,
        hostname=socket.gethostname()[:255],
        pid=os.getpid(),
        started_at=timestamp(process.started_at),
        last_heartbeat=timestamp(now),
    )
    return False


def _write_changes(process_id: str, pending: Pending, seen: dict[str, float]) -> None:
    if pending.opened:
        rows = [Connection(process_id=process_id, **row) for row in pending.opened.values()]
        Connection.objects.bulk_create(
            rows,
            update_conflicts=True,  # a restored row (a process reaped while alive) is opened again
            unique_fields=["id"],
            update_fields=["process", "last_seen", "closed_at", "close_code"],
            batch_size=CHUNK,
        )
    _write_channels(pending.channels)
    _write_seen(seen)
    _write_closed(pending.closed)


def _write_channels(channels: dict[str, list[str]]) -> None:
    if not channels:
        return
    ids = list(channels)
    for chunk in _chunks(ids):
        Subscription.objects.filter(connection_id__in=chunk).delete()
    rows = [Subscription(connection_id=cid, channel=ch) for cid, chs in channels.items() for ch in chs]
    Subscription.objects.bulk_create(rows, ignore_conflicts=True, batch_size=CHUNK)


def _write_seen(seen: dict[str, float]) -> None:
    if not seen:
        return
    # One UPDATE per flush: every connection active since the last one gets the newest time.
    newest = timestamp(max(seen.values()))
    for chunk in _chunks(list(seen)):
        Connection.objects.filter(id__in=chunk).update(last_seen=newest)


def _write_closed(closed: dict[str, tuple[float, int]]) -> None:
    by_code: dict[int, list[str]] = {}
    for connection_id, (_, code) in closed.items():
        by_code.setdefault(code, []).append(connection_id)
    for code, ids in by_code.items():
        closed_at = timestamp(max(closed[i][0] for i in ids))
        for chunk in _chunks(ids):
            Subscription.objects.filter(connection_id__in=chunk).delete()
            Connection.objects.filter(id__in=chunk, closed_at__isnull=True).update(closed_at=closed_at, close_code=code)


def connection_locate(connection_id: str, liveness_window: float) -> str | None:
    """The bus channel of the live process holding an open connection, if any."""
    return (
        Connection.objects.filter(
            id=connection_id,
            closed_at__isnull=True,
            process__stopped_at__isnull=True,
            process__last_heartbeat__gte=timezone.now() - timedelta(seconds=liveness_window),
        )
        .values_list("process__bus_channel", flat=True)
        .first()
    )


def process_mark_stopped(process_id: str) -> None:
    """Close a stopping process's connection rows and mark it stopped."""
    now = timezone.now()
    Connection.objects.filter(process_id=process_id, closed_at__isnull=True).update(closed_at=now, close_code=1001)
    Subscription.objects.filter(connection__process_id=process_id).delete()
    ServerProcess.objects.filter(id=process_id).update(stopped_at=now)


@dataclass(frozen=True)
class Reaped:
    """A connection closed for a dead process, as its row told it."""

    id: str
    transport: str
    user_id: str | None
    user_name: str
    auth: str
    channels: tuple[str, ...]


def reap_dead_processes(liveness_window: float, exclude: str | None = None) -> list[Reaped]:
    """Close the connection rows of processes whose heartbeat is older than the window (sync);
    returns the connections this call closed. Each dead process is claimed by marking it stopped:
    when several survivors reap at once, one of them closes (and reports) its connections."""
    now = timezone.now()
    dead = ServerProcess.objects.filter(
        stopped_at__isnull=True, last_heartbeat__lt=now - timedelta(seconds=liveness_window)
    )
    if exclude:
        dead = dead.exclude(id=exclude)
    dead_ids = list(dead.values_list("id", flat=True))
    if not dead_ids:
        return []
    reaped: list[Reaped] = []
    with transaction.atomic():
        claimed = [
            process_id
            for process_id in dead_ids
            if ServerProcess.objects.filter(id=process_id, stopped_at__isnull=True).update(stopped_at=now)
        ]
        if not claimed:
            return []
        open_rows = Connection.objects.filter(process_id__in=claimed, closed_at__isnull=True)
        channels: dict[str, list[str]] = {}
        for connection_id, channel in Subscription.objects.filter(connection__in=open_rows).values_list(
            "connection_id", "channel"
        ):
            channels.setdefault(connection_id, []).append(channel)
        for row in open_rows.values("id", "transport", "user_id", "user_name", "auth"):
            reaped.append(Reaped(**row, channels=tuple(sorted(channels.get(row["id"], ())))))
        Subscription.objects.filter(connection__process_id__in=claimed).delete()
        open_rows.update(closed_at=now, close_code=1006)
    logger.warning("reaped %d connections of dead processes %s", len(reaped), ", ".join(claimed))
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
