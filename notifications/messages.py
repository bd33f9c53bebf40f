"""`NotificationMessage`: a notification to hand to the connection manager (design document)::

from notifications import NotificationMessage
from streaming import connection_manager

await connection_manager.send_to_user("user123", NotificationMessage(title="Hi"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streaming import protocol
from streaming.errors import InvalidMessage


@dataclass(frozen=True)
class NotificationMessage:
    """A notification: title, text, level (`type`), whether and when the toast hides itself."""

    title: str
    content: Any = ""
    type: str = "info"
    auto_hide: bool = True
    duration: int = 5000

    def __post_init__(self) -> None:
        if self.type not in protocol.NOTIFICATION_LEVELS:
            raise InvalidMessage(
                "type is one of " + ", ".join(protocol.NOTIFICATION_LEVELS) + ".", fields={"type": "invalid"}
            )
        if not isinstance(self.title, str) or not 0 < len(self.title) <= 200:
            raise InvalidMessage("title is 1-200 characters.", fields={"title": "invalid"})
        if isinstance(self.duration, bool) or not isinstance(self.duration, int) or self.duration < 0:
            raise InvalidMessage("duration is a non-negative number of milliseconds.", fields={"duration": "invalid"})

    async def adeliver(self, *, channel: str | None = None, user_id: str | None = None) -> Any:
        """Store this notification and deliver it to everyone, a channel or a user (the
        `streaming.manager.Deliverable` protocol: how `connection_manager` hands it on)."""
        from notifications.services import anotification_create

        return await anotification_create(message=self, channel=channel, user_id=user_id)
