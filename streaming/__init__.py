"""The realtime core: WebSocket and SSE delivery, channels, history and the connection registry.

The server-side Python API is importable from here (lazily: importing `streaming` loads no
Django models)::

    from streaming import authenticator, connection_manager
"""

from typing import Any

__all__ = ["authenticator", "connection_manager"]


def __getattr__(name: str) -> Any:
    if name == "connection_manager":
        from streaming.manager import connection_manager

        return connection_manager
    if name == "authenticator":
        from streaming.auth import authenticator

        return authenticator
    raise AttributeError(f"module 'streaming' has no attribute {name!r}")
