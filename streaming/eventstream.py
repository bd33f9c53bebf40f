"""django-eventstream integration: its storage and channel-manager interfaces over our core.

With these configured (`EVENTSTREAM_STORAGE_CLASS`, `EVENTSTREAM_CHANNELMANAGER_CLASS`), code
written for django-eventstream keeps working: `django_eventstream.send_event(channel, type, data)`
stores the event in the channel's history (offsets shared with WebSocket `since` and SSE
`Last-Event-ID`) and, after commit, delivers it on our bus to every WebSocket and SSE subscriber.
The event-id format (`channel:offset,…`) and SSE encoding are django-eventstream's own.
"""

from __future__ import annotations

from typing import Any

from django_eventstream.channelmanager import ChannelManagerBase
from django_eventstream.event import Event
from django_eventstream.storage import EventDoesNotExist, StorageBase

from streaming import live, protocol, services
from streaming.auth import ANONYMOUS, authorize_subscribe, identity_for_user
from streaming.errors import StreamingError
from streaming.history import history_head, history_read


class HistoryStorage(StorageBase):
    """django-eventstream storage backed by the channel history (`streaming.history`)."""

    def append_event(self, channel: str, event_type: str, data: str) -> Event:
        """Persist an event (data is JSON text) and deliver it after commit: the one publish path."""
        published = services.publish_to_channel(
            channel=channel, content=protocol.decode(data), type=event_type, persist=True
        )
        return Event(channel, event_type, data, id=published.offset)

    def get_events(self, channel: str, last_id: int, limit: int = 100) -> list[Event]:
        """Events after `last_id`; EventDoesNotExist when history no longer reaches back."""
        recovery = history_read(channel, since=int(last_id), limit=limit)
        if not recovery.recovered:
            raise EventDoesNotExist(f"history of {channel!r} does not reach offset {last_id}", recovery.offset)
        return [
            Event(channel, envelope["type"], protocol.encode(envelope), id=envelope["offset"])
            for envelope in recovery.messages
        ]

    def get_current_id(self, channel: str) -> int:
        return history_head(channel)


class ChannelPermissions(ChannelManagerBase):
    """django-eventstream channel manager applying the channel rules (README, "Channels")."""

    def get_channels_for_request(self, request: Any, view_kwargs: dict) -> set[str]:
        return set(protocol.channel_names(*request.GET.getlist("channels"), *request.GET.getlist("channel")))

    def can_read_channel(self, user: Any, channel: str) -> bool:
        identity = identity_for_user(user) if user is not None and user.is_authenticated else ANONYMOUS
        try:
            protocol.validate_channel(channel)
            authorize_subscribe(identity, channel)
            live.authorize(identity, channel)
        except StreamingError:
            return False
        return True

    def is_channel_reliable(self, channel: str) -> bool:
        return True
