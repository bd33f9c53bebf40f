"""Request and response shapes of the HTTP API (validation and the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from streaming import protocol
from streaming.errors import InvalidChannel, InvalidMessage
from streaming.models import Connection


class ChannelField(serializers.CharField):
    """A channel name (README, "Channels")."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 100)
        kwargs.setdefault("trim_whitespace", False)  # validated as sent: "news\n" is refused, not trimmed
        kwargs.setdefault("help_text", "Channel name: ^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        try:
            return protocol.validate_channel(value)
        except InvalidChannel as error:
            raise serializers.ValidationError(error.detail, code="invalid_channel") from None


class UserIdField(serializers.CharField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, int) and not isinstance(data, bool):
            data = str(data)
        value = super().to_internal_value(data)
        try:
            return protocol.validate_user_id(value)
        except InvalidMessage as error:
            raise serializers.ValidationError(error.detail) from None


class ContentField(serializers.JSONField):
    """A message's content: any JSON value, null included, nested at most CONTENT_DEPTH_MAX deep."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("help_text", f"Any JSON value, at most {protocol.CONTENT_DEPTH_MAX} levels deep.")
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Any:
        # Not JSONField's own check: it re-encodes the value with `json` to see that it can (one
        # more encode per message, and a stack overflow — a 500 — on the deep values the body
        # parser accepts). The body parser only yields JSON values; the depth is all left to check.
        try:
            return protocol.check_content(data)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None


class MessageTypeField(serializers.CharField):
    """An envelope type (the SSE event name), checked with the protocol's own full match.

    Not DRF's RegexField: its validator `search`es, and `$` matches before a final newline.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 64)
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("help_text", f"Message type: {protocol.TYPE_RE.pattern}")
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not protocol.TYPE_RE.fullmatch(value):
            raise serializers.ValidationError(
                "1-64 characters of A-Z a-z 0-9 _ . : -, starting with a letter or digit.", code="invalid"
            )
        return value


class StrictSerializer(serializers.Serializer):
    """A request body that refuses fields it does not know, as WebSocket frames do."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(key)[:64] for key in set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown}, code="unknown_field")
        return super().to_internal_value(data)


class MessageSerializer(StrictSerializer):
    """A message to publish: the envelope's `content`, and optionally its `id` and `type`."""

    id = serializers.CharField(
        required=False,
        max_length=protocol.MESSAGE_ID_MAX,
        help_text="Defaults to a new UUID. A publish with an id already published to the channel within "
        "PUBLISH_IDEMPOTENCY_WINDOW seconds is answered with the first result and not sent again.",
    )
    type = MessageTypeField(required=False, default=protocol.DEFAULT_SERVER_TYPE)
    content = ContentField()


class BroadcastSerializer(StrictSerializer):
    message = MessageSerializer()


class ChannelPublishSerializer(StrictSerializer):
    channel = ChannelField()
    message = MessageSerializer()
    persist = serializers.BooleanField(required=False, default=False)


class UserPublishSerializer(StrictSerializer):
    user_id = UserIdField()
    message = MessageSerializer()


class EventPublishSerializer(StrictSerializer):
    """SSE-style publish: `event` becomes the envelope type, `data` its content."""

    channel = ChannelField()
    event = MessageTypeField(required=False, default=protocol.DEFAULT_SERVER_TYPE)
    data = ContentField()
    id = serializers.CharField(required=False, max_length=protocol.MESSAGE_ID_MAX)
    persist = serializers.BooleanField(required=False, default=False)


class BatchItemSerializer(StrictSerializer):
    """One message of a batch: to a channel (persisted or not), a user, or everyone."""

    channel = ChannelField(required=False)
    user_id = UserIdField(required=False)
    broadcast = serializers.BooleanField(required=False, default=False)
    message = MessageSerializer()
    persist = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        targets = [name for name in ("channel", "user_id") if attrs.get(name) is not None] + (
            ["broadcast"] if attrs["broadcast"] else []
        )
        if len(targets) != 1:
            raise serializers.ValidationError("Give exactly one of channel, user_id or broadcast: true.")
        if attrs["persist"] and "channel" not in targets:
            raise serializers.ValidationError({"persist": "Only messages to a channel are persisted."})
        return attrs


class BatchItemsField(serializers.ListField):
    """The batch's messages: their number is checked before any of them is validated."""

    def to_internal_value(self, data: Any) -> list:
        limit = settings.REALTIME.publish_batch_max_items
        if isinstance(data, list) and len(data) > limit:
            raise serializers.ValidationError(f"At most {limit} messages per batch.", code="max_length")
        return super().to_internal_value(data)


class BatchPublishSerializer(StrictSerializer):
    messages = BatchItemsField(child=BatchItemSerializer(), allow_empty=False)


class PublishedSerializer(serializers.Serializer):
    id = serializers.CharField()
    offset = serializers.IntegerField(required=False, help_text="Only for persisted messages.")


class BatchPublishedSerializer(serializers.Serializer):
    results = PublishedSerializer(many=True, help_text="One per message, in the order given.")


class TransportStatsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    max = serializers.IntegerField()
    users = serializers.IntegerField()


class ChannelStatsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    subscriptions = serializers.IntegerField()


class StatsSerializer(serializers.Serializer):
    websocket = TransportStatsSerializer()
    sse = TransportStatsSerializer()
    channels = ChannelStatsSerializer()
    total_connections = serializers.IntegerField()


class ConnectionSerializer(serializers.ModelSerializer):
    channels = serializers.SerializerMethodField()
    process = serializers.CharField(source="process_id")

    class Meta:
        model = Connection
        fields = [
            "id", "transport", "user_id", "user_name", "auth", "ip", "user_agent",
            "channels", "connected_at", "last_seen", "process",
        ]  # fmt: skip

    def get_channels(self, connection: Connection) -> list[str]:
        return sorted(s.channel for s in connection.subscriptions.all())


class PresenceSerializer(serializers.Serializer):
    channel = serializers.CharField()
    connections = serializers.IntegerField()
    user_count = serializers.IntegerField(help_text="Distinct users among the connections.")
    users = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Absent with counts_only or where presence is off."
    )


class ChannelSummarySerializer(serializers.Serializer):
    name = serializers.CharField()
    subscribers = serializers.IntegerField()
    offset = serializers.IntegerField(help_text="Newest persisted offset (0 when none).")


class ChannelDetailSerializer(ChannelSummarySerializer):
    presence = PresenceSerializer()


class EnvelopeSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    channel = serializers.CharField(allow_null=True)
    content = serializers.JSONField()
    sender = serializers.JSONField(allow_null=True)
    timestamp = serializers.CharField()
    offset = serializers.IntegerField(allow_null=True)


class HistorySerializer(serializers.Serializer):
    channel = serializers.CharField()
    offset = serializers.IntegerField()
    epoch = serializers.CharField(allow_blank=True, help_text="The epoch of the offsets; changes on a history reset.")
    messages = EnvelopeSerializer(many=True)
    recovered = serializers.BooleanField()
    has_more = serializers.BooleanField()


class SnapshotSerializer(serializers.Serializer):
    channel = serializers.CharField()
    offset = serializers.IntegerField(help_text="The channel's position when `data` was read: subscribe `since` it.")
    epoch = serializers.CharField(allow_blank=True, help_text="The epoch of that offset.")
    data = serializers.JSONField(help_text="The serialized object, or a list of them for a list channel.")
    has_more = serializers.BooleanField(help_text="A list channel holds more than LIVE_SNAPSHOT_MAX_ITEMS objects.")


class HistoryQuerySerializer(serializers.Serializer):
    since = serializers.IntegerField(required=False, min_value=0)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    epoch = serializers.RegexField(
        protocol.EPOCH_RE.pattern, required=False, allow_blank=True,
        help_text="The epoch `since` counts in; another than the channel's answers recovered: false.",
    )  # fmt: skip


class HistoryResetSerializer(serializers.Serializer):
    channel = serializers.CharField()
    offset = serializers.IntegerField()
    epoch = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="Error code, e.g. invalid_message, forbidden.")
    error = serializers.CharField()
    fields = serializers.DictField(required=False)


# What an operation may answer besides its success (for the OpenAPI schema): 401 for credentials
# that are present but invalid (whatever API_AUTH_REQUIRED says) or missing where required, 403
# for a caller who is not allowed, 503 while the database (or for a publish, the bus) is down;
# a body adds 400 (invalid), 413 (over SSE_MAX_MESSAGE_SIZE) and 415 (not JSON).
COMMON_ERRORS = {401: ErrorSerializer, 403: ErrorSerializer, 503: ErrorSerializer}
BODY_ERRORS = {400: ErrorSerializer, **COMMON_ERRORS, 413: ErrorSerializer, 415: ErrorSerializer}
