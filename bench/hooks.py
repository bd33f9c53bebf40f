"""No-op application hooks for the `chat` scenario's `ours-daphne+hooks` server: what a subscribe
and a publish hook cost the server itself, beside the application's own work."""

from __future__ import annotations

from typing import Any


async def no_objection(context: Any) -> None:
    """Answer every subscribe and publish with no objection (the built-in rules decide)."""
    return None
