"""Request and response shapes of the notifications API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from notifications.models import Level, Notification
from streaming.api.serializers import ChannelField, StrictSerializer, UserIdField


class NotificationSendSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200)
    content = serializers.CharField(allow_blank=True, max_length=100_000)
    type = serializers.ChoiceField(choices=Level.values, default=Level.INFO)
    auto_hide = serializers.BooleanField(required=False, default=True)
    duration = serializers.IntegerField(required=False, default=5000, min_value=0, max_value=3_600_000)
    channel = ChannelField(required=False)
    user_id = UserIdField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("channel") and attrs.get("user_id"):
            raise serializers.ValidationError("Give a channel or a user_id, not both.")
        return attrs


class NotificationSentSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The id of the delivered envelope.")
    notification_id = serializers.IntegerField()


class NotificationReadSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    read = serializers.BooleanField()


class NotificationsMarkedSerializer(serializers.Serializer):
    marked = serializers.IntegerField(help_text="How many notifications were marked read.")


class NotificationSerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="level")
    read = serializers.BooleanField(source="is_read")

    class Meta:
        model = Notification
        fields = [
            "id",
            "title",
            "content",
            "type",
            "auto_hide",
            "duration",
            "target",
            "channel",
            "user_id",
            "created_at",
            "read",
        ]
