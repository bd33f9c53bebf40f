"""Reads of the realtime core: live connections, stats and presence across every process.

A connection is live when its row is open and its process has a fresh heartbeat, so a dead
process's connections stop counting at once, before they are reaped. Synchronous (ORM).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from streaming import protocol
from streaming.models import Channel, Connection, ServerProcess, Subscription

PRESENCE_USERS_MAX = 1000


def live_processes() -> QuerySet[ServerProcess]:
    fresh = timezone.now() - timedelta(seconds=settings.REALTIME.liveness_window)
    return ServerProcess.objects.filter(stopped_at__isnull=True, last_heartbeat__gte=fresh)


def live_connections() -> QuerySet[Connection]:
    """Open connections of live processes, newest first."""
    return Connection.objects.filter(closed_at__isnull=True, process__in=live_processes())


def connection_list(
    *, transport: str | None = None, user_id: str | None = None, channel: str | None = None
) -> QuerySet[Connection]:
    """Live connections, filtered; each with its explicit channels prefetched."""
    connections = live_connections()
    if transport:
        connections = connections.filter(transport=transport)
    if user_id:
        connections = connections.filter(user_id=user_id)
    if channel:
        connections = connections.filter(subscriptions__channel=channel)
    return connections.prefetch_related("subscriptions").order_by("-connected_at", "id")


def connection_stats() -> dict[str, Any]:
    """The stats document of the README's "HTTP API" (the design document's keys), for the whole cluster."""
    config = settings.REALTIME
    processes = max(1, live_processes().count())
    counts = live_connections().aggregate(
        ws=Count("id", filter=Q(transport="ws")),
        ws_users=Count("user_id", filter=Q(transport="ws"), distinct=True),
        sse=Count("id", filter=Q(transport="sse")),
        sse_users=Count("user_id", filter=Q(transport="sse"), distinct=True),
    )
    subscriptions = Subscription.objects.filter(connection__in=live_connections())
    return {
        "websocket": {
            "total": counts["ws"],
            "max": config.websocket_max_connections * processes,
            "users": counts["ws_users"],
        },
        "sse": {
            "total": counts["sse"],
            "max": config.sse_max_connections * processes,
            "users": counts["sse_users"],
        },
        "channels": {
            "total": subscriptions.values("channel").distinct().count(),
            "subscriptions": subscriptions.count(),
        },
        "total_connections": counts["ws"] + counts["sse"],
    }


def channel_presence(channel: str, counts_only: bool = False) -> dict[str, Any]:
    """Who is subscribed to a channel right now: connection and distinct user counts, and unless
    `counts_only` the user ids (the first PRESENCE_USERS_MAX by id)."""
    subscribers = live_connections().filter(subscriptions__channel=channel)
    identified = subscribers.exclude(user_id__isnull=True).values_list("user_id", flat=True).distinct()
    presence: dict[str, Any] = {
        "channel": channel,
        "connections": subscribers.count(),
        "user_count": identified.count(),
    }
    if not counts_only:
        presence["users"] = list(identified.order_by("user_id")[:PRESENCE_USERS_MAX])
    return presence


def channel_names(*, admin: bool = True, user_id: str | None = None) -> QuerySet:
    """Names of channels with live subscribers or history, sorted. For a caller who is not an
    admin, without protected channels and personal channels other than the caller's own."""
    subscribed = Subscription.objects.filter(connection__in=live_connections()).values_list("channel", flat=True)
    persisted = Channel.objects.values_list("name", flat=True)
    if not admin:
        subscribed = subscribed.exclude(_hidden("channel", user_id))
        persisted = persisted.exclude(_hidden("name", user_id))
    return subscribed.union(persisted).order_by("channel")


def _hidden(field: str, user_id: str | None) -> Q:
    prefixes = (protocol.PRIVATE_PREFIX, protocol.PRESENCE_PREFIX, protocol.USER_PREFIX)
    hidden = Q()
    for prefix in prefixes:
        hidden |= Q(**{f"{field}__startswith": prefix})
    if user_id is not None:
        hidden &= ~Q(**{field: protocol.user_channel(user_id)})
    return hidden


def channel_summaries(names: list[str]) -> list[dict[str, Any]]:
    """Subscriber counts and newest offsets of the given channels, in their order."""
    counts = dict(
        Subscription.objects.filter(connection__in=live_connections(), channel__in=names)
        .values_list("channel")
        .annotate(n=Count("id"))
        .values_list("channel", "n")
    )
    heads = dict(Channel.objects.filter(name__in=names).values_list("name", "last_offset"))
    return [{"name": n, "subscribers": counts.get(n, 0), "offset": heads.get(n, 0)} for n in names]
