"""The server-side Python API of the design document: `connection_manager`.

    from streaming import connection_manager

    await connection_manager.broadcast_to_all({"type": "news", "content": {...}})
    await connection_manager.broadcast_to_channel("important_updates", message, persist=True)
    await connection_manager.send_to_user("user123", notification)  # a NotificationMessage

A message is a `Deliverable` — an object that delivers itself, such as the notifications app's
`NotificationMessage` (stored, then delivered as `notification`) — a dict with `content` and optionally
`type` and `id`, or any other JSON value (the content of a `message`). Every method is a
coroutine; sync code calls `streaming.services` directly.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

from channels.db import database_sync_to_async
from django.conf import settings

from streaming import protocol, selectors, services
from streaming.registry import reap_dead
from streaming.runtime import get_runtime


@runtime_checkable
class Deliverable(Protocol):
    """A message that delivers itself, e.g. a notification that is stored first."""

    async def adeliver(self, *, channel: str | None = None, user_id: str | None = None) -> Any:
        """Deliver to a channel, a user, or (neither given) everyone."""


def _parts(message: Any) -> dict[str, Any]:
    if isinstance(message, dict) and "content" in message:
        return {
            "content": message["content"],
            "type": message.get("type") or protocol.DEFAULT_SERVER_TYPE,
            "message_id": message.get("id"),
        }
    return {"content": message, "type": protocol.DEFAULT_SERVER_TYPE, "message_id": None}


class ConnectionManager:
    """Publish to connections and inspect them from server code."""

    async def broadcast_to_all(self, message: Any) -> services.Published | Any:
        """Send to every connection on both transports."""
        if isinstance(message, Deliverable):
            return await message.adeliver()
        return await services.abroadcast(**_parts(message))

    async def broadcast_to_channel(self, channel: str, message: Any, persist: bool = False) -> Any:
        """Send to a channel's subscribers; `persist=True` stores it for recovery and new subscribers."""
        if isinstance(message, Deliverable):
            return await message.adeliver(channel=channel)
        return await services.apublish_to_channel(channel=channel, persist=persist, **_parts(message))

    async def send_to_user(self, user_id: str, message: Any) -> Any:
        """Send to every connection of one user."""
        if isinstance(message, Deliverable):
            return await message.adeliver(user_id=user_id)
        return await services.apublish_to_user(user_id=user_id, **_parts(message))

    async def disconnect(self, connection_id: str, code: int = protocol.CloseCode.CLOSED_BY_ADMIN) -> None:
        """Close a connection in whichever process holds it."""
        await services.aconnection_close(connection_id, code)

    async def cleanup_inactive_connections(self) -> int:
        """Close this process's idle connections and reap dead processes' rows; returns the count."""
        runtime = get_runtime()
        config = settings.REALTIME
        closed = 0
        if config.websocket_disconnect_timeout:
            now = time.time()
            for connection in list(runtime.registry.connections.values()):
                if connection.transport == "ws" and now - connection.last_seen > config.websocket_disconnect_timeout:
                    connection.close(protocol.CloseCode.IDLE, "idle timeout")
                    closed += 1
        await runtime.registry.flush()
        reaped = await database_sync_to_async(reap_dead)(config.liveness_window, runtime.registry.process_id)
        return closed + reaped

    async def get_stats(self) -> dict[str, Any]:
        """The `/ws/stats` document."""
        await get_runtime().registry.flush()
        return await database_sync_to_async(selectors.connection_stats)()


connection_manager = ConnectionManager()
