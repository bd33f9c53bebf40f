"""A bus that records what the product hands it, for tests without a server loop (the sync test client)."""

from __future__ import annotations

from typing import Any

import pytest

from streaming.bus import LocalBus


class RecordingBus(LocalBus):
    """Records publishes by channel and commands by address; every connection asked to close is
    closed (`answers` overrides that)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: dict[str, list[dict[str, Any]]] = {}
        self.sent: dict[str, list[dict[str, Any]]] = {}
        self.answers: dict[str, dict[str, Any] | None] = {}

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.published.setdefault(channel, []).append(message)

    async def apublish(self, channel: str, message: dict[str, Any]) -> None:
        self.publish(channel, message)

    async def asend(self, address: str, command: dict[str, Any]) -> None:
        self.sent.setdefault(address, []).append(command)

    async def arequest(self, address: str, command: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        self.sent.setdefault(address, []).append(command)
        return self.answers.get(address, {"type": "hub.closed", "closed": True})

    def received(self, channel: str) -> dict[str, Any]:
        """The one bus message of a publish to `channel`."""
        (message,) = self.published[channel]
        return message


@pytest.fixture
def bus(monkeypatch) -> RecordingBus:
    """Replace this process's bus (no REDIS_URL in tests) with a recording one."""
    recording = RecordingBus()
    monkeypatch.setattr(LocalBus, "_instance", recording)
    return recording
