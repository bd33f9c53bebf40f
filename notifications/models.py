"""Notifications: stored, delivered live over both transports, with per-user read state."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from streaming import protocol


class Level(models.TextChoices):
    INFO = "info", "Info"
    SUCCESS = "success", "Success"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"


class Target(models.TextChoices):
    EVERYONE = "all", "Everyone"
    CHANNEL = "channel", "A channel"
    USER = "user", "A user"


class Notification(models.Model):
    """A notification addressed to everyone, a channel's subscribers or one user."""

    title = models.CharField(max_length=200)
    content = models.TextField(blank=True, default="")
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    auto_hide = models.BooleanField(default=True, help_text="Hide the toast after `duration`.")
    duration = models.PositiveIntegerField(default=5000, help_text="Milliseconds on screen.")
    target = models.CharField(max_length=10, choices=Target.choices, default=Target.EVERYONE)
    channel = models.CharField(max_length=100, blank=True, default="", db_index=True)
    user_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    message_id = models.CharField(max_length=protocol.MESSAGE_ID_MAX, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_label = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target", "-created_at"])]

    def __str__(self) -> str:
        return self.title

    @property
    def delivery_channel(self) -> str:
        """The channel the notification is published on."""
        if self.target == Target.USER:
            return protocol.user_channel(self.user_id)
        if self.target == Target.CHANNEL:
            return self.channel
        return protocol.BROADCAST


class NotificationRead(models.Model):
    """That a user has read a notification."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="reads")
    user_id = models.CharField(max_length=64)
    read_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["notification", "user_id"], name="unique_notification_read")]
        indexes = [models.Index(fields=["user_id", "notification"])]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.notification_id}"
