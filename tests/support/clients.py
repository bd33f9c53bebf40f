"""Small real clients for end-to-end tests: an SSE reader (httpx-sse) and a WebSocket wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import websockets
from httpx_sse import aconnect_sse


class SSEReader:
    """Reads a real SSE stream in the background; `await next_event()` returns parsed events."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url, self.headers = url, headers or {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.response: httpx.Response | None = None
        self.opened = asyncio.Event()
        self.ended = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(10, read=None))

    async def __aenter__(self) -> SSEReader:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.opened.wait(), 10)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._client.aclose()

    async def _run(self) -> None:
        try:
            async with aconnect_sse(self._client, "GET", self.url, headers=self.headers) as source:
                self.response = source.response
                self.opened.set()
                async for event in source.aiter_sse():
                    data = json.loads(event.data) if event.data else None
                    await self.events.put({"event": event.event, "data": data, "id": event.id, "retry": event.retry})
        finally:
            self.opened.set()
            self.ended.set()

    async def next_event(self, timeout: float = 5, skip: tuple[str, ...] = ("heartbeat",)) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            event = await asyncio.wait_for(self.events.get(), max(remaining, 0))
            if event["event"] not in skip:
                return event

    async def until(self, event_name: str, timeout: float = 5) -> dict:
        while True:
            event = await self.next_event(timeout, skip=())
            if event["event"] == event_name:
                return event


class WSClient:
    """A real WebSocket client speaking the project's protocol."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url, self.options = url, options
        self.socket: Any = None
        self.greeting: dict = {}
        self.pending: list[dict] = []  # frames that arrived while `call` waited for its reply
        self._ids = 0

    async def __aenter__(self) -> WSClient:
        self.socket = await websockets.connect(self.url, **self.options)
        self.greeting = json.loads(await asyncio.wait_for(self.socket.recv(), 5))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.socket.close()

    async def recv(self, timeout: float = 5, skip: tuple[str, ...] = ("heartbeat",)) -> dict:
        """The next frame not in `skip` within `timeout`; heartbeats are answered with a pong."""
        while self.pending:
            frame = self.pending.pop(0)
            if frame.get("type") not in skip:
                return frame
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            frame = json.loads(await asyncio.wait_for(self.socket.recv(), max(remaining, 0)))
            if frame.get("type") == "heartbeat":
                await self.socket.send('{"action": "pong"}')
            if frame.get("type") not in skip:
                return frame

    async def call(self, action: str, data: dict | None = None, timeout: float = 5) -> dict:
        """Send an action and return its reply (frames before the reply are kept in `pending`)."""
        self._ids += 1
        request_id = f"t{self._ids}"
        await self.socket.send(json.dumps({"action": action, "data": data or {}, "request_id": request_id}))
        held = []
        try:
            while True:
                frame = await self._receive(timeout)
                if frame.get("request_id") == request_id:
                    return frame
                held.append(frame)
        finally:
            self.pending.extend(held)

    async def _receive(self, timeout: float) -> dict:
        frame = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
        if frame.get("type") == "heartbeat":
            await self.socket.send('{"action": "pong"}')
        return frame
