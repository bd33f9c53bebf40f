"""What the client tests share: a scripted `websockets` server in this process, the fast
reconnection options, polling, and an envelope."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import websockets

FAST = {"reconnect_interval": 0.01, "max_reconnect_delay": 0.02, "request_timeout": 2, "open_timeout": 2}


async def eventually(predicate: Callable[[], Any], timeout: float = 3.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            await asyncio.sleep(0.005)
    return value


class ScriptedServer:
    """A WebSocket server on a free port: greets each connection (`greeting`), keeps the frames it
    receives per connection, and hands each to `answer`, which a test's server defines."""

    def __init__(self) -> None:
        self.frames: list[list[dict[str, Any]]] = []  # per connection
        self.sockets: list[Any] = []
        self.port = 0
        self._server: Any = None

    async def __aenter__(self) -> ScriptedServer:
        self._server = await websockets.serve(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    def greeting(self, number: int) -> dict[str, Any]:
        """The `data` of the greeting of connection `number` (from 0)."""
        return {"connection_id": f"c{number + 1}", "user_id": None, "heartbeat_interval": 30}

    async def answer(self, socket: Any, number: int, frame: dict[str, Any]) -> None:
        """Answer one frame of connection `number`."""

    async def push(self, *frames: dict[str, Any]) -> None:
        """Send frames on the newest connection."""
        for frame in frames:
            await self.sockets[-1].send(json.dumps(frame))

    @staticmethod
    async def reply(socket: Any, type: str, content: Any, request_id: Any) -> None:
        await socket.send(json.dumps({"type": type, "content": content, "request_id": request_id}))

    async def _handle(self, socket: Any) -> None:
        number = len(self.sockets)
        self.sockets.append(socket)
        self.frames.append([])
        await socket.send(json.dumps({"type": "connected", "data": self.greeting(number)}))
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in socket:
                frame = json.loads(text)
                self.frames[number].append(frame)
                await self.answer(socket, number, frame)
