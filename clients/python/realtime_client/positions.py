"""Stream positions: an offset and the epoch of the channel's history.

The epoch changes when a channel's history is reset; offsets then start again, so an offset means
something only with its epoch. The WebSocket client keeps both per channel (`since` and `epoch`
of a resubscription); an SSE event id carries them for every channel of the stream as
`channel:offset-epoch,…` (channel names percent-encoded; `channel:offset` while a channel has no
epoch), and is handed back unchanged as `Last-Event-ID`: only this module reads it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

_POSITION = re.compile(r"(\d+)(?:-([A-Za-z0-9]{1,16}))?")


def parse_event_id(event_id: str | None) -> dict[str, tuple[int, str]]:
    """The (offset, epoch) of each channel in an SSE event id; the epoch is "" when the id has
    none. Parts that are not positions are skipped."""
    positions: dict[str, tuple[int, str]] = {}
    for part in (event_id or "").split(","):
        channel, colon, raw = part.rpartition(":")
        match = _POSITION.fullmatch(raw)
        if colon and channel and match:
            positions[unquote(channel)] = (int(match[1]), match[2] or "")
    return positions


def with_positions(event_id: str | None, positions: dict[str, tuple[int, str]]) -> str:
    """`event_id` with the (offset, epoch) of `positions`' channels put in place of theirs (or
    added): the `Last-Event-ID` that resumes those channels from there and the others as before.
    Parts that are not positions are left out."""
    parts = []
    for part in (event_id or "").split(","):
        channel, colon, raw = part.rpartition(":")
        if colon and channel and _POSITION.fullmatch(raw) and unquote(channel) not in positions:
            parts.append(part)
    for channel, (offset, epoch) in positions.items():
        parts.append(f"{quote(channel, safe='')}:{offset}" + (f"-{epoch}" if epoch else ""))
    return ",".join(parts)


def was_reset(since: int | None, epoch: str | None, offset: int, current: str | None, recovered: bool) -> bool:
    """Whether a resumption from offset `since` of `epoch` found the channel's history reset: the
    channel's epoch is now `current` (another one), or its head `offset` is behind `since`."""
    if since is None or recovered:
        return False
    return (bool(epoch) and current != epoch) or offset < since
