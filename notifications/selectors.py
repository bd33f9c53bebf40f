"""Reads of the notifications app: what a caller can see, with their read state."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet

from notifications.models import Notification, NotificationRead, Target
from streaming.auth import Identity
from streaming.models import Subscription


def caller_channels(identity: Identity, requested: list[str]) -> list[str]:
    """The channels whose notifications a caller sees: their live subscriptions plus `requested`."""
    from streaming.auth import authorize_subscribe
    from streaming.errors import StreamingError

    live = set()
    if identity.user_id:
        live = set(
            Subscription.objects.filter(
                connection__user_id=identity.user_id, connection__closed_at__isnull=True
            ).values_list("channel", flat=True)
        )
    allowed = set()
    for channel in requested:
        try:
            authorize_subscribe(identity, channel)
        except StreamingError:
            continue
        allowed.add(channel)
    return sorted(live | allowed)


def notification_visible_to(identity: Identity, channels: list[str]) -> QuerySet[Notification]:
    """Notifications addressed to everyone, to the caller, or to one of `channels`."""
    visible = Q(target=Target.EVERYONE)
    if identity.user_id:
        visible |= Q(target=Target.USER, user_id=identity.user_id)
    if channels:
        visible |= Q(target=Target.CHANNEL, channel__in=channels)
    return Notification.objects.filter(visible)


def notification_list(identity: Identity, channels: list[str], unread_only: bool = False) -> QuerySet[Notification]:
    """The caller's notification centre, newest first, each annotated with `is_read`."""
    notifications = notification_visible_to(identity, channels).annotate(
        is_read=Exists(NotificationRead.objects.filter(notification=OuterRef("pk"), user_id=identity.user_id or ""))
    )
    if unread_only:
        notifications = notifications.filter(is_read=False)
    return notifications
