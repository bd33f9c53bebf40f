"""Admin for the realtime core: connections (with disconnect), processes, channel history."""

from __future__ import annotations

from typing import Any

import orjson
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from streaming import services
from streaming.errors import StreamingError
from streaming.models import ChannelMessage, Connection, ServerProcess


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Open"), ("closed", "Closed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "open":
            return queryset.filter(closed_at__isnull=True)
        if self.value() == "closed":
            return queryset.filter(closed_at__isnull=False)
        return queryset


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "transport",
        "user_id",
        "user_name",
        "ip",
        "channel_list",
        "connected_at",
        "last_seen",
        "closed_at",
        "close_code",
        "process",
    ]
    list_filter = [OpenFilter, "transport", "auth", "process"]
    search_fields = ["id", "ip", "user_id", "user_name"]
    list_select_related = ["process"]
    show_full_result_count = False
    actions = ["disconnect_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("subscriptions")

    @admin.display(description="channels")
    def channel_list(self, connection: Connection) -> str:
        return ", ".join(sorted(s.channel for s in connection.subscriptions.all()))

    @admin.action(description="Disconnect selected connections")
    def disconnect_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        closed = 0
        for connection_id in queryset.filter(closed_at__isnull=True).values_list("id", flat=True):
            try:
                services.connection_close(connection_id)
                closed += 1
            except StreamingError as error:
                self.message_user(request, f"{connection_id}: {error.detail}", messages.WARNING)
        self.message_user(request, f"Disconnected {closed} connection(s).", messages.SUCCESS)


@admin.register(ServerProcess)
class ServerProcessAdmin(ReadOnlyAdmin):
    list_display = ["id", "hostname", "pid", "started_at", "last_heartbeat", "stopped_at"]
    list_filter = ["hostname"]


@admin.register(ChannelMessage)
class ChannelMessageAdmin(ReadOnlyAdmin):
    list_display = ["channel", "offset", "type", "message_id", "created_at"]
    search_fields = ["=channel__name", "=message_id"]
    show_full_result_count = False
    ordering = ["-id"]
    readonly_fields = fields = ["channel", "offset", "message_id", "type", "envelope_json", "created_at"]

    @admin.display(description="envelope")
    def envelope_json(self, message: ChannelMessage) -> str:
        """The stored envelope, indented for reading."""
        return format_html("<pre>{}</pre>", orjson.dumps(message.envelope(), option=orjson.OPT_INDENT_2).decode())
