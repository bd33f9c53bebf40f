"""What the WebSocket and SSE clients share: state, callbacks, and the loop that reconnects."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from realtime_client.backoff import Backoff
from realtime_client.contexts import (
    ClientState,
    ConnectedContext,
    DisconnectedContext,
    ErrorContext,
    ReconnectedContext,
)
from realtime_client.dedup import RecentIds
from realtime_client.endpoint import Endpoint
from realtime_client.exceptions import (
    ClientError,
    ConnectFailed,
    ConnectionLost,
    NotConnected,
    ReconnectFailed,
    RequestTimeout,
    TransportError,
)
from realtime_client.handlers import Dispatcher, Handler, Handlers

default_logger = logging.getLogger("realtime_client")

NORMAL_CLOSURE = 1000
_END = object()


class Reopen(ConnectionLost):
    """The client ends its own connection to open another at once (an SSE stream whose channels
    changed): no backoff, no `on_disconnect`, and not subject to `process_exception`."""


def process_exception(error: ClientError) -> ClientError | None:
    """The default retry decision: None (reconnect) for transport failures, else the error to stop with."""
    return None if isinstance(error, TransportError) else error


class ReconnectingClient:
    """A client that keeps one connection open and reconnects with backoff when it drops.

    Options (keywords of every client):
        auto_reconnect: reconnect when a connection drops (else the client closes).
        max_reconnect_attempts: failed attempts in a row before giving up with ReconnectFailed
            (None: never give up); the count restarts after a stable connection.
        reconnect_interval, max_reconnect_delay: the backoff's first ceiling and its cap, seconds.
        stable_after: seconds a connection must last for the backoff to start over.
        open_timeout, request_timeout: seconds to connect and be greeted; to get a reply.
        dedup_size: how many envelope ids are remembered to drop duplicates.
        rng: a `random.Random` for the backoff's jitter (seed it for reproducible delays).
        process_exception: `error -> None` to retry it, or the error to stop with; by default
            TransportErrors are retried and everything else (4401, 4403, HTTP 401/403) stops.

    A subclass opens a connection in `_open()` (raising a ClientError when it cannot, setting
    `self.connection` when greeted), reads it in `_read()` until it ends (returning why), restores
    its channels in `_restore()` after a reconnection and drops it in `_close_transport()`.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        auto_reconnect: bool = True,
        max_reconnect_attempts: int | None = 10,
        reconnect_interval: float = 5.0,
        max_reconnect_delay: float = 10.0,
        stable_after: float = 10.0,
        open_timeout: float = 10.0,
        request_timeout: float = 10.0,
        dedup_size: int = 1024,
        rng: random.Random | None = None,
        process_exception: Callable[[ClientError], ClientError | None] = process_exception,
        logger: logging.Logger = default_logger,
    ) -> None:
        self.endpoint = endpoint
        self.auto_reconnect = auto_reconnect
        self.max_reconnect_attempts = max_reconnect_attempts
        self.stable_after = stable_after
        self.open_timeout = open_timeout
        self.request_timeout = request_timeout
        self.process_exception = process_exception
        self.logger = logger
        self.backoff = Backoff(reconnect_interval, max(max_reconnect_delay, reconnect_interval), rng=rng)
        self.state = ClientState.DISCONNECTED
        self.connection: ConnectedContext | None = None
        self.recovery: dict[str, bool] = {}
        self.error: ClientError | None = None
        self._handlers = Handlers()
        self._hooks = Handlers()
        self._dispatcher = Dispatcher(self._callback_failed, logger)
        self._recent = RecentIds(dedup_size)
        self._floors: dict[str, tuple[int, str]] = {}  # channel -> (offset, epoch) of a snapshot taken on it
        self._listeners: set[asyncio.Queue[Any]] = set()
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._connected_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self._restoring: asyncio.Task[None] | None = None

    # -- lifecycle callbacks -----------------------------------------------------------------

    def on_connect(self, handler: Handler) -> Handler:
        """Register a callback called with a ConnectedContext each time the server greets us."""
        return self._hooks.add("connect", handler)

    def on_disconnect(self, handler: Handler) -> Handler:
        """Register a callback called with a DisconnectedContext each time a connection ends."""
        return self._hooks.add("disconnect", handler)

    def on_reconnect(self, handler: Handler) -> Handler:
        """Register a callback called with a ReconnectedContext once a reconnection restored channels."""
        return self._hooks.add("reconnect", handler)

    def on_error(self, handler: Handler) -> Handler:
        """Register a callback called with an ErrorContext for failures not raised to a caller."""
        return self._hooks.add("error", handler)

    def on_reset(self, handler: Handler) -> Handler:
        """Register a callback called with a ResetContext when a channel's history was reset: live
        (`stream-reset`), or found on resuming with a position of the old epoch."""
        return self._hooks.add("reset", handler)

    # -- opening and closing -------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection, or raise the ClientError that prevented it; from then on, stay connected."""
        if self.state in (ClientState.CONNECTING, ClientState.CONNECTED):
            return
        self.error = None
        self._closed = asyncio.Event()
        self._dispatcher.start()
        self._set_state(ClientState.CONNECTING)
        try:
            await self._open()
        except BaseException:
            self._set_state(ClientState.DISCONNECTED)
            await self._release()
            await self._dispatcher.stop(self.request_timeout)
            raise
        self.backoff.reset()
        self._opened(reconnected=False)
        self._supervisor = asyncio.create_task(self._supervise(), name="streaming-client-connection")

    async def disconnect(self) -> None:
        """Close the connection for good and stop reconnecting; callbacks already queued still run."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
            self._cancel_restore()
            await self._close_transport(NotConnected("the client disconnected"))
            if self.state is not ClientState.CLOSED:
                closed = DisconnectedContext(NORMAL_CLOSURE, "client disconnected", reconnecting=False)
                self._emit("disconnect", closed)
                self._finish(None)
        await self._release()
        await self._dispatcher.stop(self.request_timeout)

    async def wait_closed(self) -> None:
        """Wait until the client is closed for good; raise the error that closed it, if any."""
        if self.state is not ClientState.DISCONNECTED:
            await self._closed.wait()
        if self.error is not None:
            raise self.error

    def messages(self) -> EnvelopeStream:
        """An async iterator of the envelopes delivered from now on, across reconnections.

        Duplicates are dropped. It ends when the client is disconnected, and raises the error that
        closed the client if one did. `async for envelope in client` is the same.
        """
        return EnvelopeStream(self)

    def __aiter__(self) -> EnvelopeStream:
        return self.messages()

    async def __aenter__(self) -> ReconnectingClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    # -- the connection's life -----------------------------------------------------------------

    async def _supervise(self) -> None:
        """The top level of the connection's task: keep connected until that fails for good."""
        try:
            final = await self._keep_connected()
        except Exception as error:  # a bug in this client: log it with context, then close
            self.logger.exception("connection supervisor of %s failed", self.endpoint.authority)
            await self._close_transport(NotConnected("internal client error"))
            final = ClientError(f"internal client error: {error!r}")
        self._finish(final)
        await self._release()
        await self._dispatcher.stop(self.request_timeout)

    async def _keep_connected(self) -> ClientError:
        """Read until the connection ends, then reconnect; return the error that ends it all."""
        while True:
            ended = await self._read()
            self._cancel_restore()
            await self._close_transport(ended)
            if isinstance(ended, Reopen):
                final = None
            else:
                final = self._verdict(ended) if self.auto_reconnect else ended
                self._emit_disconnect(ended, reconnecting=final is None)
            if final is None:
                final = await self._reconnect(ended)
            if final is not None:
                return final

    async def _reconnect(self, error: ClientError) -> ClientError | None:
        """Retry with backoff; None once reconnected, else the error to stop with."""
        if time.monotonic() - self._connected_at >= self.stable_after:
            self.backoff.reset()
        self._set_state(ClientState.CONNECTING)
        limit = self.max_reconnect_attempts
        at_once = isinstance(error, Reopen)  # a first attempt without delay, not counted
        while at_once or limit is None or self.backoff.attempts < limit:
            if at_once:
                at_once = False
                self.logger.debug("reopening: %s", error)
            else:
                delay = next(self.backoff)
                if isinstance(error, ConnectFailed) and error.retry_after:
                    delay = max(delay, error.retry_after)
                self.logger.info("reconnecting in %.2f s (attempt %d): %s", delay, self.backoff.attempts, error)
                await asyncio.sleep(delay)
            try:
                await self._open()
            except ClientError as failure:
                error = failure
                final = self._verdict(failure) if self.auto_reconnect else failure
                if final is not None:
                    return final
                continue
            self._opened(reconnected=True)
            self._restoring = asyncio.create_task(self._restore_and_report(self.backoff.attempts))
            return None
        failed = ReconnectFailed(self.backoff.attempts, error)
        failed.__cause__ = error
        return failed

    async def _restore_and_report(self, attempts: int) -> None:
        try:
            recovered = await self._restore()
        except TransportError:
            return  # dropped again while restoring; the next reconnection restores
        except ClientError as error:
            self._report(error, "restoring channels")
            return
        self.recovery.update(recovered)
        self._emit("reconnect", ReconnectedContext(attempts, recovered))

    def _verdict(self, error: ClientError) -> ClientError | None:
        try:
            return self.process_exception(error)
        except ClientError as raised:  # raising instead of returning is an easy mistake; honour it
            return raised

    def _opened(self, *, reconnected: bool) -> None:
        self._connected_at = time.monotonic()
        self._set_state(ClientState.CONNECTED)
        self._connected.set()
        if self.connection is not None:
            self._emit("connect", dataclasses.replace(self.connection, reconnected=reconnected))

    def _finish(self, error: ClientError | None) -> None:
        self.error = error
        self._set_state(ClientState.CLOSED)
        for queue in self._listeners:
            queue.put_nowait(_END)
        self._closed.set()
        if error is not None:
            self.logger.warning("client of %s closed: %s", self.endpoint.authority, error)
            self._report(error, "connection")

    def _cancel_restore(self) -> None:
        if self._restoring is not None and not self._restoring.done():
            self._restoring.cancel()
        self._restoring = None

    def _set_state(self, state: ClientState) -> None:
        if state is not ClientState.CONNECTED:
            self._connected.clear()
        self.state = state

    async def _wait_connected(self) -> None:
        """Return once connected: at once, or after a reconnection within the request timeout."""
        if self.state is ClientState.CONNECTING:
            try:
                async with asyncio.timeout(self.request_timeout):
                    await self._connected.wait()
            except TimeoutError:
                raise RequestTimeout(f"not reconnected within {self.request_timeout:g} s") from None
        if self.state is not ClientState.CONNECTED:
            raise NotConnected("the client is not connected; call connect()") from self.error

    # -- callbacks and delivery ----------------------------------------------------------------

    def _accept(self, envelope: dict[str, Any]) -> bool:
        """Pass a delivered envelope to iterators; False for a duplicate, or for one a snapshot
        of its channel already shows, which are dropped."""
        if self._below_floor(envelope):
            self.logger.debug("dropped envelope %s: the snapshot of its channel shows it", envelope["id"])
            return False
        if self._recent.seen(envelope["id"]):
            self.logger.debug("dropped duplicate envelope %s", envelope["id"])
            return False
        for queue in self._listeners:
            queue.put_nowait(envelope)
        return True

    def _set_floor(self, channel: str, offset: int, epoch: str) -> None:
        """A snapshot of `channel` at (offset, epoch) was taken while its envelopes flow: those up
        to `offset` that arrive from now on are in it, and are dropped."""
        if offset > 0:
            self._floors[channel] = (offset, epoch)

    def _below_floor(self, envelope: dict[str, Any]) -> bool:
        channel, offset = envelope.get("channel"), envelope.get("offset")
        floor = self._floors.get(channel) if isinstance(channel, str) else None
        if floor is None or not isinstance(offset, int):
            return False
        if offset <= floor[0]:
            return True
        del self._floors[channel]  # past the snapshot: offsets only grow from here (until a reset)
        return False

    def _reset_floor(self, channel: str, epoch: str | None) -> None:
        """A channel's history was reset: a snapshot of another epoch no longer says anything."""
        floor = self._floors.get(channel)
        if floor is not None and floor[1] != (epoch or ""):
            del self._floors[channel]

    def _dispatch(self, names: tuple[str, ...], argument: Any) -> None:
        self._dispatcher.put(self._handlers.matching(*names), argument, f"handler for {names[0]!r}")

    def _emit(self, hook: str, context: Any) -> None:
        self._dispatcher.put(self._hooks.matching(hook), context, f"on_{hook}")

    def _emit_disconnect(self, error: ClientError, *, reconnecting: bool) -> None:
        code = getattr(error, "code", None)
        reason = getattr(error, "reason", str(error))
        self._emit("disconnect", DisconnectedContext(code, reason, reconnecting, error))

    def _report(self, error: BaseException, while_doing: str) -> None:
        self._emit("error", ErrorContext(error, while_doing))

    def _callback_failed(self, error: BaseException, label: str) -> None:
        if label != "on_error":
            self._report(error, label)

    # -- what a transport provides -----------------------------------------------------------

    async def _open(self) -> None:
        """Open one connection and wait for the greeting; raise a ClientError on failure."""
        raise NotImplementedError

    async def _read(self) -> ClientError:
        """Read the open connection until it ends; return why it ended."""
        raise NotImplementedError

    async def _restore(self) -> dict[str, bool]:
        """After a reconnection: resume every channel; return whether each recovered what it missed."""
        raise NotImplementedError

    async def _close_transport(self, error: ClientError) -> None:
        """Drop the connection (if any) and fail whatever waits on it with `error`."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Called when the client closes for good: free what outlives one connection."""


class EnvelopeStream:
    """Envelopes delivered to a client from the moment this stream was created (`client.messages()`)."""

    def __init__(self, client: ReconnectingClient) -> None:
        self._client = client
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        client._listeners.add(self._queue)
        if client.state is ClientState.CLOSED:
            self._queue.put_nowait(_END)

    def __aiter__(self) -> EnvelopeStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stay ended if iterated again
            self.close()
            if self._client.error is not None:
                raise self._client.error
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Stop receiving envelopes."""
        self._client._listeners.discard(self._queue)
