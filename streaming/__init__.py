"""The realtime core: WebSocket and SSE delivery, channels, history and the connection registry.

The server-side Python API is importable from here (lazily, so that `streaming.clients` can be
used without Django)::

    from streaming import connection_manager, NotificationMessage, authenticator
"""

from typing import Any

__all__ = ["NotificationMessage", "authenticator", "connection_manager", "create_sse_client", "create_ws_client"]


def __getattr__(name: str) -> Any:
    if name == "connection_manager":
        from streaming.manager import connection_manager

        return connection_manager
    if name == "authenticator":
        from streaming.auth import authenticator

        return authenticator
    if name == "NotificationMessage":
        from notifications.messages import NotificationMessage

        return NotificationMessage
    if name in ("create_ws_client", "create_sse_client"):
        from streaming import clients

        return getattr(clients, name)
    raise AttributeError(f"module 'streaming' has no attribute {name!r}")
