"""Duplicate detection by envelope id, in bounded memory."""

from __future__ import annotations

import pytest
from realtime_client.dedup import RecentIds, is_envelope


def test_recent_ids_reports_an_id_seen_before():
    recent = RecentIds(size=10)
    assert recent.seen("a") is False
    assert recent.seen("b") is False
    assert recent.seen("a") is True


def test_recent_ids_forgets_the_oldest_beyond_its_size():
    recent = RecentIds(size=3)
    for envelope_id in "abcd":
        recent.seen(envelope_id)
    assert len(recent) == 3
    assert recent.seen("a") is False  # forgotten, so new again
    assert recent.seen("d") is True


def test_recent_ids_keeps_an_id_that_keeps_coming_back():
    recent = RecentIds(size=2)
    recent.seen("a")
    recent.seen("b")
    recent.seen("a")  # refreshed: "b" is now the oldest
    recent.seen("c")
    assert recent.seen("a") is True
    assert recent.seen("b") is False


def test_recent_ids_needs_room_for_one():
    with pytest.raises(ValueError):
        RecentIds(size=0)


def test_only_delivered_envelopes_count_as_envelopes():
    envelope = {
        "id": "x",
        "type": "text",
        "channel": "c",
        "content": 1,
        "sender": None,
        "timestamp": "t",
        "offset": None,
    }
    assert is_envelope(envelope)
    assert not is_envelope({"type": "ack", "content": {"id": "x"}, "request_id": "1"})
    assert not is_envelope({"type": "heartbeat", "timestamp": "t"})
    assert not is_envelope({"type": "connected", "data": {}})
    assert not is_envelope("text")
