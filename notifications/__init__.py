"""Notifications: stored messages with per-user read state, delivered through the realtime core.

from notifications import NotificationMessage
"""

from notifications.messages import NotificationMessage

__all__ = ["NotificationMessage"]
