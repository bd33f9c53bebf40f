"""Decoding a `text/event-stream` body into events, by the WHATWG Server-Sent Events rules."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: `event` is "message" when the block named none; `id` is this block's own."""

    event: str
    data: str
    id: str | None = None


class SSEDecoder:
    """Feed it lines (without their line ending); it returns an event at each blank line.

    `last_event_id` is the stream's last event ID (it survives blocks without `id:`), and `retry`
    the reconnection time in milliseconds the server asked for, if any.
    """

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._first_line = True
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        if self._first_line:
            self._first_line = False
            line = line.removeprefix("\ufeff")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (often a keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    async def events(self, lines: AsyncIterable[str]) -> AsyncGenerator[ServerSentEvent, None]:
        """The events of a stream of lines, such as `httpx.Response.aiter_lines()`."""
        async for line in lines:
            event = self.decode(line)
            if event is not None:
                yield event

    def _dispatch(self) -> ServerSentEvent | None:
        event = None
        if self._data:  # a block without data lines sets fields but dispatches nothing
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id)
        self._event, self._data, self._id = "", [], None
        return event
