"""Channel history: gapless per-channel offsets, retention, and recovery reads.

Written only for `persist: true` publishes, inside the publisher's transaction; read by WebSocket
subscribe/history, the history API and the SSE storage, so `since` and `Last-Event-ID` agree.
Synchronous (ORM); async callers go through `database_sync_to_async`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.functions import Length
from django.utils import timezone

from streaming import protocol
from streaming.models import Channel, ChannelMessage, Subscription
from streaming.namespaces import options, ttls

EPOCH_LENGTH = 8


EPOCH_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_epoch() -> str:
    """A fresh stream epoch: 8 random lowercase letters and digits."""
    return new_epochs(1)[0]


def new_epochs(count: int) -> list[str]:
    """`count` fresh epochs from one read of the system's randomness (a persisted batch gives one
    to each channel it may create). 36 does not divide 256: the first four letters are a little
    likelier, which costs an 8-character epoch nothing of its use (telling resets apart)."""
    raw = os.urandom(EPOCH_LENGTH * count)
    letters = "".join([EPOCH_ALPHABET[byte % 36] for byte in raw])
    return [letters[start : start + EPOCH_LENGTH] for start in range(0, len(letters), EPOCH_LENGTH)]


@dataclass(frozen=True)
class Recovery:
    """What a reader gets back: messages after its position, and whether nothing is missing."""

    channel: str
    offset: int  # the channel's newest offset (0 if nothing was ever persisted)
    messages: list[dict[str, Any]] = field(default_factory=list)
    recovered: bool = False
    has_more: bool = False
    epoch: str = ""  # the epoch of the channel's offsets ("" while it has no history row)


def history_append(
    entries: Sequence[tuple[str, dict[str, Any], str]], epochs: dict[str, str] | None = None
) -> list[str]:
    """Store envelopes at the next offsets of their channels, in the order given; returns their
    texts with the offsets set (`entries` are (channel, envelope, text with a null offset)), and
    fills `epochs` with the epoch of each channel's offsets.

    Must run inside a transaction. One statement moves every channel head of the batch on
    (creating those that are new) and returns the new heads: it locks those rows until commit,
    in name order (no deadlock between batches), so concurrent publishers — in any process — get
    consecutive offsets, and a rollback gives them back. One more inserts the messages, and one
    trims what is past each channel's history size (CHANNEL_HISTORY_SIZE, or its namespace's).
    """
    now = timezone.now()
    counts = Counter(channel for channel, _, _ in entries)
    heads = _advance_heads(counts, now)
    if epochs is not None:
        epochs.update((channel, epoch) for channel, (_, epoch) in heads.items())
    heads = {channel: head for channel, (head, _) in heads.items()}
    next_offset = {channel: heads[channel] - count + 1 for channel, count in counts.items()}
    texts, rows = [], []
    created = connection.ops.adapt_datetimefield_value(now)
    for channel, envelope, text in entries:
        offset = next_offset[channel]
        next_offset[channel] = offset + 1
        envelope["offset"] = offset
        text = protocol.with_offset(text, offset)
        texts.append(text)
        rows.append((channel, offset, envelope["id"], envelope["type"], text, created))
    _insert_messages(rows)
    below = {}
    for channel, head in heads.items():
        keep = options(channel).history_size
        if head > keep:
            below[channel] = head - keep
    _trim(below)
    return texts


# Plain SQL for the two statements of every persisted publish: the ORM's bulk_create builds a model
# instance and prepares each field of every row, most of a persisted batch's time
# (bench/OPTIMISATIONS.md). Column names come from the model; values are already database values.
_ROWS_PER_INSERT = 500  # 3,000 parameters: under every backend's limit


def _insert_messages(rows: list[tuple[str, int, str, str, str, Any]]) -> None:
    quote = connection.ops.quote_name
    fields = ("channel", "offset", "message_id", "type", "text", "created_at")
    columns = ", ".join(quote(ChannelMessage._meta.get_field(name).column) for name in fields)
    table = quote(ChannelMessage._meta.db_table)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {values}", [value for row in chunk for value in row]
            )


def _trim(below: dict[str, int]) -> None:
    """Delete each channel's messages at or below its offset in `below` (retention)."""
    if not below:
        return
    quote = connection.ops.quote_name
    table = quote(ChannelMessage._meta.db_table)
    channel = quote(ChannelMessage._meta.get_field("channel").column)
    offset = quote(ChannelMessage._meta.get_field("offset").column)
    names = sorted(below)
    with connection.cursor() as cursor:
        for start in range(0, len(names), _ROWS_PER_INSERT):
            chunk = names[start : start + _ROWS_PER_INSERT]
            condition = " OR ".join([f"({channel} = %s AND {offset} <= %s)"] * len(chunk))
            cursor.execute(f"DELETE FROM {table} WHERE {condition}", [v for name in chunk for v in (name, below[name])])


def _advance_heads(counts: dict[str, int], now: Any) -> dict[str, tuple[int, str]]:
    """Add `counts` to the channels' heads (an upsert with RETURNING); the new heads and their
    epochs by channel (a channel's first row gets a fresh epoch)."""
    table = connection.ops.quote_name(Channel._meta.db_table)
    names = sorted(counts)
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(names))
    params: list[Any] = []
    for name, epoch in zip(names, new_epochs(len(names)), strict=True):
        params += [name, counts[name], epoch, now, now]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (name, last_offset, epoch, created_at, updated_at) VALUES {values} "
            f"ON CONFLICT (name) DO UPDATE SET last_offset = {table}.last_offset + excluded.last_offset, "
            "updated_at = excluded.updated_at RETURNING name, last_offset, epoch",
            params,
        )
        return {name: (head, epoch) for name, head, epoch in cursor.fetchall()}


def history_head(channel: str) -> int:
    """The newest offset of a channel (0 when it has no persisted messages)."""
    return history_position(channel)[0]


def history_position(channel: str) -> tuple[int, str]:
    """The newest offset of a channel and its epoch ((0, "") when it has no history row)."""
    row = Channel.objects.filter(name=channel).values_list("last_offset", "epoch").first()
    return (row[0], row[1]) if row else (0, "")


def snapshot_position(channel: str) -> tuple[int, str]:
    """The position of a channel for a snapshot read in the same transaction (README, "Live models").

    Must run inside a transaction, before the snapshot's data is read. On PostgreSQL the channel's
    head row is created when missing and locked FOR SHARE until commit: a publisher that has moved
    it on (in the transaction that also wrote the data) commits before this read returns, and one
    that has not waits until the snapshot's transaction ends. Either way the data read next and the
    position agree. SQLite's transactions read one snapshot of the whole database already.
    """
    if connection.vendor != "postgresql":
        return history_position(channel)
    table = connection.ops.quote_name(Channel._meta.db_table)
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (name, last_offset, epoch, created_at, updated_at) VALUES (%s, 0, %s, %s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            [channel, new_epoch(), now, now],
        )
        cursor.execute(f"SELECT last_offset, epoch FROM {table} WHERE name = %s FOR SHARE", [channel])
        head, epoch = cursor.fetchone()
    return head, epoch


HEADS_CHUNK = 500  # channel names per query: SQLite bounds a statement's parameters (32,766)


def history_heads(channels: list[str]) -> dict[str, tuple[int, str]]:
    """The newest offsets and epochs of several channels at once (channels never persisted are absent).

    Read HEADS_CHUNK names per query, so a process following tens of thousands of channels is not
    refused by a database's limit on parameters.
    """
    heads = {}
    for start in range(0, len(channels), HEADS_CHUNK):
        chunk = channels[start : start + HEADS_CHUNK]
        rows = Channel.objects.filter(name__in=chunk).values_list("name", "last_offset", "epoch")
        heads.update((name, (head, epoch)) for name, head, epoch in rows)
    return heads


def history_read(
    channel: str, since: int | None = None, limit: int | None = None, epoch: str | None = None
) -> Recovery:
    """Retained messages after `since` (the newest retained ones when None), oldest first.

    A page holds at most `limit` messages and HISTORY_PAGE_MAX_BYTES of them (always at least
    one); `has_more` says that more follow `since`. `recovered` is true when `since` was given
    and every message after it is returned or follows in a next page; false when history no
    longer reaches back to `since + 1`, or when `epoch` is not the channel's (its history was
    reset since: `since` counts in offsets that are gone, and nothing is returned).
    """
    head, current = history_position(channel)
    limit = limit or options(channel).history_size or 1
    if since is not None and epoch and epoch != current:
        return Recovery(channel, head, recovered=False, epoch=current)
    if head == 0 or (since is not None and since > head):
        # No history, or a position from a history that no longer exists (e.g. reset).
        return Recovery(channel, head, recovered=since is not None and since == head, epoch=current)
    rows = _retained(channel)
    if since is None:  # a new subscriber: the newest messages that fit, oldest first
        offsets = _fitting(rows.order_by("-offset"), limit)
        page = list(rows.filter(offset__gte=offsets[-1])) if offsets else []
        return Recovery(channel, head, [row.envelope() for row in page], False, False, current)
    offsets = _fitting(rows.filter(offset__gt=since), limit)
    has_more = bool(offsets) and offsets[-1] < head  # retained offsets have no gaps after the oldest
    page = list(rows.filter(offset__gt=since, offset__lte=offsets[-1])) if offsets else []
    recovered = since == head or (bool(page) and page[0].offset == since + 1)
    return Recovery(channel, head, [row.envelope() for row in page], recovered, has_more, current)


def history_reset(channel: str) -> str:
    """Delete a channel's history and start its offsets again at 0 under a new epoch (sync);
    returns the epoch. Resuming clients of the old epoch are told their position is gone."""
    epoch = new_epoch()
    with transaction.atomic():
        ChannelMessage.objects.filter(channel_id=channel).delete()
        if not Channel.objects.filter(name=channel).update(last_offset=0, epoch=epoch, updated_at=timezone.now()):
            Channel.objects.create(name=channel, last_offset=0, epoch=epoch, updated_at=timezone.now())
    return epoch


def _fitting(rows: QuerySet, count: int) -> list[int]:
    """The offsets of the first `count` rows whose texts fit HISTORY_PAGE_MAX_BYTES (at least one).

    Sizes are read without the texts, so an over-large page is never loaded: a few callers of
    6 MB replies made every other database action of the server wait.
    """
    budget, offsets = settings.REALTIME.history_page_max_bytes, []
    for offset, size in rows.values_list("offset", Length("text"))[:count]:
        budget -= size
        if budget < 0 and offsets:
            break
        offsets.append(offset)
    return offsets


def history_expire() -> int:
    """Delete messages older than their channel's TTL (CHANNEL_HISTORY_TTL or its namespace's);
    returns how many went."""
    in_use = ttls()
    if len(in_use) == 1:
        deleted, _ = ChannelMessage.objects.filter(created_at__lt=_cutoff(in_use.pop())).delete()
        return deleted
    # Channels with a message older than the shortest TTL, grouped by their own TTL.
    names = ChannelMessage.objects.filter(created_at__lt=_cutoff(min(in_use))).values_list("channel_id", flat=True)
    by_ttl: dict[int, list[str]] = {}
    for name in names.distinct().iterator(chunk_size=_ROWS_PER_INSERT):
        by_ttl.setdefault(options(name).history_ttl, []).append(name)
    deleted = 0
    for ttl, channels in by_ttl.items():
        for start in range(0, len(channels), _ROWS_PER_INSERT):
            chunk = channels[start : start + _ROWS_PER_INSERT]
            count, _ = ChannelMessage.objects.filter(channel_id__in=chunk, created_at__lt=_cutoff(ttl)).delete()
            deleted += count
    return deleted


HEADS_PRUNED_MAX = 10_000  # head rows deleted per run (the next run goes on)


def history_prune_heads() -> int:
    """Delete the head rows of channels whose history is empty and idle past their TTL, with no
    live subscriber (sync); returns how many went. Such a channel starts again at offset 1 under a
    new epoch when next persisted to: a position of the old epoch is a reset, never a duplicate."""
    in_use = ttls()
    candidates = (
        Channel.objects.filter(updated_at__lt=_cutoff(min(in_use)))
        .exclude(Exists(ChannelMessage.objects.filter(channel_id=OuterRef("name"))))
        .values_list("name", flat=True)[:HEADS_PRUNED_MAX]
    )
    by_ttl: dict[int, list[str]] = {}
    for name in candidates:
        by_ttl.setdefault(options(name).history_ttl, []).append(name)
    subscribed = Subscription.objects.filter(channel=OuterRef("name"), connection__closed_at__isnull=True)
    pruned = 0
    for ttl, names in by_ttl.items():
        for start in range(0, len(names), _ROWS_PER_INSERT):
            # One statement that checks again what it deletes: a publish that moved the head on
            # meanwhile keeps it.
            chunk = names[start : start + _ROWS_PER_INSERT]
            doomed = Channel.objects.filter(name__in=chunk, updated_at__lt=_cutoff(ttl))
            doomed = doomed.exclude(Exists(ChannelMessage.objects.filter(channel_id=OuterRef("name"))))
            pruned += doomed.exclude(Exists(subscribed))._raw_delete(doomed.db)
    return pruned


def _retained(channel: str):
    cutoff = _cutoff(options(channel).history_ttl)
    return ChannelMessage.objects.filter(channel_id=channel, created_at__gte=cutoff).order_by("offset")


def _cutoff(ttl: int):
    return timezone.now() - timedelta(seconds=ttl)
