"""Small real clients for end-to-end tests: an SSE reader (httpx-sse) and a WebSocket wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
from typing import Any

import httpx
import websockets
from httpx_sse import aconnect_sse


def without_epochs(event_id: str | None) -> str | None:
    """An SSE position (`channel:offset-epoch,…`) without its epochs, to compare offsets alone."""
    return None if event_id is None else re.sub(r"-[A-Za-z0-9]{1,16}(?=,|$)", "", event_id)


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


def raw_websocket(port: int, path: str = "/ws/connect") -> socket.socket:
    """A WebSocket whose reader never reads: the kernel buffers fill and the server must hold back."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".encode()
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response
    return sock


def send_raw_frame(sock: socket.socket, text: str) -> None:
    """Send one masked text frame (payloads under 126 bytes)."""
    payload = text.encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)


def read_close_code(sock: socket.socket, timeout: float = 10) -> int | None:
    """Read server frames until the close frame; its code (None if the connection just ended)."""
    sock.settimeout(timeout)
    buffer = b""

    def need(count: int) -> bool:
        nonlocal buffer
        while len(buffer) < count:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return False
            buffer += chunk
        return True

    while need(2):
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        header = 2
        if length == 126:
            if not need(4):
                return None
            length, header = struct.unpack("!H", buffer[2:4])[0], 4
        elif length == 127:
            if not need(10):
                return None
            length, header = struct.unpack("!Q", buffer[2:10])[0], 10
        if not need(header + length):
            return None
        payload, buffer = buffer[header : header + length], buffer[header + length :]
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    return None
