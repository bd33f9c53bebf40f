"""A lean Redis connection for the bus's two hot paths: PUBLISH, and the pub/sub subscription.

redis-py's asyncio client spent more of a publish than the rest of the server together (a pool
checkout, retries, a timer per read, a Python parser's glue; bench/OPTIMISATIONS.md). Here one
connection per event loop and server carries every PUBLISH of that loop, pipelined: the commands
of one loop turn go out in one write, the replies come back in order and hiredis (redis-py's own
C parser) reads them. The subscriber connection hands each pushed message to a callback. Anything
else (sync publishers, requests, health checks, idempotency claims) uses redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

CONNECT_SECONDS = 5.0


class RespError(ConnectionError):
    """The connection failed, or Redis answered with an error."""


def encode_command(*parts: bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%b\r\n" % (len(part), part))
    return b"".join(out)


class RespConnection(asyncio.Protocol):
    """One connection to one Redis server: pipelined commands, or (with `on_push`) a subscriber."""

    def __init__(self, on_push: Callable[[list], None] | None = None) -> None:
        self.on_push = on_push
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False

    @classmethod
    async def open(cls, url: str, on_push: Callable[[list], None] | None = None) -> RespConnection:
        """Connect (and authenticate) to the server of a redis://, rediss:// or unix:// URL."""
        loop = asyncio.get_running_loop()
        parts = urlsplit(url)
        async with asyncio.timeout(CONNECT_SECONDS):
            if parts.scheme == "unix":
                _, connection = await loop.create_unix_connection(lambda: cls(on_push), parts.path)
            else:
                context = ssl.create_default_context() if parts.scheme == "rediss" else None
                host, port = parts.hostname or "127.0.0.1", parts.port or 6379
                _, connection = await loop.create_connection(lambda: cls(on_push), host, port, ssl=context)
            if parts.password is not None:
                credentials = [unquote(parts.username)] if parts.username else []
                await connection.command(b"AUTH", *[c.encode() for c in [*credentials, unquote(parts.password)]])
        return connection

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if self.on_push is not None and isinstance(reply, list) and reply and reply[0] == b"message":
                self.on_push(reply)
            elif self.on_push is not None and isinstance(reply, list):
                continue  # a subscribe/unsubscribe confirmation
            elif self._waiting:
                waiting = self._waiting.popleft()
                if not waiting.done():
                    if isinstance(reply, hiredis.ReplyError):
                        waiting.set_exception(RespError(str(reply)))
                    else:
                        waiting.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = RespError(f"connection to Redis lost: {exc!r}")
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.done():
                waiting.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(exc)

    # -- commands -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.lost.done() or self.transport is None or self.transport.is_closing()

    def command(self, *parts: bytes) -> asyncio.Future:
        """Queue a command; its reply arrives on the returned future (sent at the end of this loop turn)."""
        waiting = asyncio.get_running_loop().create_future()
        if self.closed:
            waiting.set_exception(RespError("connection to Redis closed"))
            return waiting
        self._waiting.append(waiting)
        self._write(encode_command(*parts))
        return waiting

    def send(self, *parts: bytes) -> None:
        """Queue a command whose answer comes as a push (SUBSCRIBE, UNSUBSCRIBE)."""
        if self.closed:
            raise RespError("connection to Redis closed")
        self._write(encode_command(*parts))

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and not self.closed:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Publisher:
    """The PUBLISH connection of one loop to one server, opened again after a failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: RespConnection | None = None
        self._opening: asyncio.Future | None = None

    async def publish(self, key: bytes, payload: bytes) -> Any:
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        return await connection.command(b"PUBLISH", key, payload)

    async def _connect(self) -> RespConnection:
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(RespConnection.open(self.url))
        try:
            self._connection = await asyncio.shield(self._opening)
        except (OSError, TimeoutError) as error:
            raise RespError(f"cannot reach Redis: {error!r}") from error
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
