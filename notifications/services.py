"""Writes of the notifications app: create-and-deliver, and read state."""

from __future__ import annotations

from functools import partial
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from notifications.messages import NotificationMessage
from notifications.models import Notification, NotificationRead, Target
from notifications.selectors import notification_visible_to
from streaming import protocol, services
from streaming.auth import Identity


def notification_create(
    *,
    message: NotificationMessage,
    channel: str | None = None,
    user_id: str | None = None,
    created_by: Any = None,
) -> Notification:
    """Store a notification and deliver it after commit to everyone, a channel or a user."""
    if channel and user_id:
        raise ValueError("a notification goes to a channel or to a user, not both")
    if channel:
        protocol.validate_channel(channel)
    if user_id:
        user_id = protocol.validate_user_id(user_id)
    target = Target.CHANNEL if channel else Target.USER if user_id else Target.EVERYONE
    with transaction.atomic():
        notification = Notification.objects.create(
            title=message.title,
            content=message.content if isinstance(message.content, str) else protocol.encode(message.content),
            level=message.type,
            auto_hide=message.auto_hide,
            duration=message.duration,
            target=target,
            channel=channel or "",
            user_id=user_id or "",
            message_id=protocol.new_id(),
            created_by=created_by if getattr(created_by, "_meta", None) else None,
            created_by_label=str(created_by or "")[:150],
        )
        transaction.on_commit(partial(_deliver, notification), robust=True)
    return notification


async def anotification_create(**kwargs: Any) -> Notification:
    return await database_sync_to_async(notification_create)(**kwargs)


def notification_content(notification: Notification) -> dict[str, Any]:
    """The envelope `content` of a notification (README, "WebSocket protocol"), with its id for read receipts."""
    content = protocol.notification_content(
        title=notification.title,
        content=notification.content,
        level=notification.level,
        auto_hide=notification.auto_hide,
        duration=notification.duration,
    )
    content["notification_id"] = notification.pk
    return content


def _deliver(notification: Notification) -> None:
    services.publish_to_channel(
        channel=notification.delivery_channel,
        content=notification_content(notification),
        type=protocol.NOTIFICATION,
        message_id=notification.message_id,
    )


def notification_mark_read(*, identity: Identity, notification_id: int, channels: list[str]) -> bool:
    """Mark one notification read for the caller; False if they cannot see it."""
    if not notification_visible_to(identity, channels).filter(pk=notification_id).exists():
        return False
    NotificationRead.objects.get_or_create(notification_id=notification_id, user_id=identity.user_id)
    return True


def notification_mark_all_read(*, identity: Identity, channels: list[str]) -> int:
    """Mark every notification the caller can see as read; returns how many were unread."""
    unread = notification_visible_to(identity, channels).exclude(reads__user_id=identity.user_id)
    now = timezone.now()
    rows = [
        NotificationRead(notification_id=pk, user_id=identity.user_id, read_at=now)
        for pk in unread.values_list("pk", flat=True)
    ]
    NotificationRead.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
