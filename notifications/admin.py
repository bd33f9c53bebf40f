"""Admin for notifications: compose one and it is delivered live; see how many read it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from notifications.messages import NotificationMessage
from notifications.models import Notification, NotificationRead, Target
from notifications.services import notification_create
from streaming import protocol
from streaming.errors import StreamingError


class NotificationForm(forms.ModelForm):
    """The compose form: the chosen target must come with a valid address, so nothing goes astray."""

    ADDRESSES = {
        Target.CHANNEL: ("channel", protocol.validate_channel),
        Target.USER: ("user_id", protocol.validate_user_id),
    }

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "target" not in self.fields:
            return data  # a sent notification, shown read-only
        target = data.get("target")
        for address_target, (field, validate) in self.ADDRESSES.items():
            if target != address_target:
                data[field] = ""  # an address this target does not use
            elif not data.get(field):
                self.add_error(field, f"Required to send to {Target(target).label.lower()}.")
            else:
                try:
                    data[field] = validate(data[field])
                except StreamingError as error:
                    self.add_error(field, error.detail)
        return data


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    form = NotificationForm
    list_display = ["title", "level", "target", "channel", "user_id", "created_by_label", "created_at", "read_count"]
    list_filter = ["level", "target"]
    search_fields = ["title", "channel", "user_id"]
    fields = ["title", "content", "level", "auto_hide", "duration", "target", "channel", "user_id"]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(read_total=Count("reads"))

    @admin.display(description="read by", ordering="read_total")
    def read_count(self, notification: Notification) -> int:
        return notification.read_total

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A sent notification is history: it can be read and deleted, not rewritten.
        return self.fields if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Notification, form: Any, change: bool) -> None:
        if change:
            return
        created = notification_create(
            message=NotificationMessage(
                title=obj.title, content=obj.content, type=obj.level, auto_hide=obj.auto_hide, duration=obj.duration
            ),
            channel=obj.channel if obj.target == "channel" else None,
            user_id=obj.user_id if obj.target == "user" else None,
            created_by=request.user,
        )
        obj.pk = created.pk
        obj.__dict__.update(created.__dict__)


@admin.register(NotificationRead)
class NotificationReadAdmin(admin.ModelAdmin):
    list_display = ["notification", "user_id", "read_at"]
    search_fields = ["user_id"]
    list_select_related = ["notification"]
