"""Channel history: gapless per-channel offsets, retention, and recovery reads.

Written only for `persist: true` publishes, inside the publisher's transaction; read by WebSocket
subscribe/history, the history API and the SSE storage, so `since` and `Last-Event-ID` agree.
Synchronous (ORM); async callers go through `database_sync_to_async`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Length
from django.utils import timezone

from streaming.models import Channel, ChannelMessage


@dataclass(frozen=True)
class Recovery:
    """What a reader gets back: messages after its position, and whether nothing is missing."""

    channel: str
    offset: int  # the channel's newest offset (0 if nothing was ever persisted)
    messages: list[dict[str, Any]] = field(default_factory=list)
    recovered: bool = False
    has_more: bool = False


def history_append(*, channel: str, envelope: dict[str, Any], encode: Callable[[dict[str, Any]], str]) -> str:
    """Store an envelope at the next offset of its channel; returns its text, encoded by `encode`
    once the offset is set (the one encoding of the publish, stored and delivered as it is).

    Must run inside a transaction: the UPDATE of the channel head row locks it until commit, so
    concurrent publishers get consecutive offsets, and a rollback gives the offset back.
    """
    now = timezone.now()
    if not Channel.objects.filter(name=channel).update(last_offset=F("last_offset") + 1, updated_at=now):
        try:
            with transaction.atomic():
                Channel.objects.create(name=channel, last_offset=1, updated_at=now)
        except IntegrityError:  # another publisher created it first; take the next one
            Channel.objects.filter(name=channel).update(last_offset=F("last_offset") + 1, updated_at=now)
    offset = Channel.objects.filter(name=channel).values_list("last_offset", flat=True).get()
    envelope["offset"] = offset
    text = encode(envelope)
    ChannelMessage.objects.create(
        channel_id=channel, offset=offset, message_id=envelope["id"], type=envelope["type"], text=text, created_at=now
    )
    keep = settings.REALTIME.channel_history_size
    if offset > keep:
        ChannelMessage.objects.filter(channel_id=channel, offset__lte=offset - keep).delete()
    return text


def history_head(channel: str) -> int:
    """The newest offset of a channel (0 when it has no persisted messages)."""
    head = Channel.objects.filter(name=channel).values_list("last_offset", flat=True).first()
    return head or 0


def history_heads(channels: list[str]) -> dict[str, int]:
    """The newest offsets of several channels at once (channels never persisted are absent)."""
    return dict(Channel.objects.filter(name__in=channels).values_list("name", "last_offset"))


def history_read(channel: str, since: int | None = None, limit: int | None = None) -> Recovery:
    """Retained messages after `since` (the newest retained ones when None), oldest first.

    A page holds at most `limit` messages and HISTORY_PAGE_MAX_BYTES of them (always at least
    one); `has_more` says that more follow `since`. `recovered` is true when `since` was given
    and every message after it is returned or follows in a next page; false when history no
    longer reaches back to `since + 1`.
    """
    head = history_head(channel)
    limit = limit or settings.REALTIME.channel_history_size or 1
    if head == 0 or (since is not None and since > head):
        # No history, or a position from a history that no longer exists (e.g. reset).
        return Recovery(channel, head, recovered=since is not None and since == head)
    rows = _retained(channel)
    if since is None:  # a new subscriber: the newest messages that fit, oldest first
        offsets = _fitting(rows.order_by("-offset"), limit)
        page = list(rows.filter(offset__gte=offsets[-1])) if offsets else []
        return Recovery(channel, head, [row.envelope() for row in page], False, False)
    offsets = _fitting(rows.filter(offset__gt=since), limit)
    has_more = bool(offsets) and offsets[-1] < head  # retained offsets have no gaps after the oldest
    page = list(rows.filter(offset__gt=since, offset__lte=offsets[-1])) if offsets else []
    recovered = since == head or (bool(page) and page[0].offset == since + 1)
    return Recovery(channel, head, [row.envelope() for row in page], recovered, has_more)


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
    """Delete messages older than CHANNEL_HISTORY_TTL; returns how many went."""
    deleted, _ = ChannelMessage.objects.filter(created_at__lt=_cutoff()).delete()
    return deleted


def _retained(channel: str):
    return ChannelMessage.objects.filter(channel_id=channel, created_at__gte=_cutoff()).order_by("offset")


def _cutoff():
    return timezone.now() - timedelta(seconds=settings.REALTIME.channel_history_ttl)
