"""Dropping messages delivered twice (a replay overlapping live delivery), in bounded memory."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class RecentIds:
    """The ids of the last `size` envelopes seen; older ones are forgotten first."""

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._ids: OrderedDict[Any, None] = OrderedDict()

    def seen(self, envelope_id: Any) -> bool:
        """True if this id was seen recently; otherwise remember it and return False."""
        if envelope_id in self._ids:
            self._ids.move_to_end(envelope_id)
            return True
        self._ids[envelope_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)


def is_envelope(payload: Any) -> bool:
    """True for a delivered message (an envelope), false for replies, greetings, heartbeats."""
    return isinstance(payload, dict) and "id" in payload and "timestamp" in payload and "request_id" not in payload
