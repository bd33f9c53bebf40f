"""The WebSocket client of `/ws/connect` (README, "WebSocket protocol"): requests with replies, handlers, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_client.contexts import ConnectedContext, ResetContext
from realtime_client.dedup import is_envelope
from realtime_client.endpoint import DEFAULT_API_KEY_HEADER, Endpoint, refusal_error, retry_after_seconds
from realtime_client.exceptions import (
    AccessDenied,
    AuthenticationFailed,
    ClientError,
    ConnectFailed,
    ConnectionLost,
    NotConnected,
    ReplyError,
    RequestTimeout,
    describe,
)
from realtime_client.handlers import Handler
from realtime_client.positions import was_reset
from realtime_client.publisher import HTTPPublisher
from realtime_client.reconnecting import ReconnectingClient

# daphne drops the reason the server gives when closing, so the client names each code itself.
CLOSE_REASONS = {
    1000: "closed normally",
    1001: "the server is going away",
    1011: "server error",
    1013: "the server is full (max connections); try again later",
    4401: "authentication failed or expired",
    4403: "origin or IP address not allowed",
    4408: "closed as idle",
    4409: "closed by an administrator",
    4429: "slow consumer or sustained rate-limit abuse",
}


def close_error(closed: ConnectionClosed, *, greeted: bool) -> ClientError:
    """The error for a closed WebSocket: fatal for 4401/4403, retryable for anything else."""
    frame = closed.rcvd
    code = frame.code if frame is not None else None
    reason = (frame.reason if frame is not None else "") or CLOSE_REASONS.get(code or 0, "the connection dropped")
    if code == 4401:
        return AuthenticationFailed(reason, code)
    if code == 4403:
        return AccessDenied(reason, code)
    return ConnectionLost(reason, code) if greeted else ConnectFailed(reason, code)


class WebSocketClient(ReconnectingClient):
    """A WebSocket client that keeps its subscriptions across reconnections.

    Every request awaits its reply (matched by `request_id`) for `request_timeout` seconds and
    raises ReplyError on an error reply. Handlers get each frame whose `type` matches (`"*"`: all).
    After a reconnection every channel is subscribed again with `since` = the last offset seen and
    `epoch` = the epoch of that offset, and `client.recovery[channel]` (also passed to
    `on_reconnect`) says whether nothing was missed. A channel whose history was reset (a
    `stream-reset` frame, or a resumption from another epoch) is reported to `on_reset` and its
    position starts again at the server's. Server-side channels of the greeting count as
    subscribed: they are in `channels`, and resumed like the others.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8000,
        *,
        token: str | None = None,
        api_key: str | None = None,
        secure: bool = False,
        path: str = "/ws/connect",
        api_key_header: str = DEFAULT_API_KEY_HEADER,
        max_message_size: int = 2**20,
        close_timeout: float = 2.0,
        **options: Any,
    ) -> None:
        super().__init__(Endpoint(host, port, secure, token, api_key, api_key_header), **options)
        self.path = path
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self._ws: ClientConnection | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._request_ids = itertools.count(1)
        self._channels: dict[str, int | None] = {}
        self._epochs: dict[str, str] = {}
        self._server_side: set[str] = set()  # joined by the server at connect, not subscribed to
        self._subscribing: dict[str, tuple[int | None, str | None]] = {}  # the position each subscribe resumes from
        self._snapshotting: dict[str, int] = {}  # channels with a subscribe_with_snapshot waiting for its snapshot
        self._silence_limit: float | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._publisher: HTTPPublisher | None = None  # for publish_batch, made on first use

    @property
    def url(self) -> str:
        return self.endpoint.ws_url(self.path)

    @property
    def channels(self) -> list[str]:
        """The channels subscribed to (subscribed again after each reconnection)."""
        return list(self._channels)

    @property
    def offsets(self) -> dict[str, int | None]:
        """The last offset seen per channel: the `since` of its next resubscription."""
        return dict(self._channels)

    @property
    def epochs(self) -> dict[str, str]:
        """The epoch of each channel's offset, when the server gave one: sent with `since`."""
        return dict(self._epochs)

    @property
    def server_channels(self) -> list[str]:
        """The channels the server joined at connect (the token's `subs` claim, the application's
        connect hook) and that were not subscribed to: also in `channels`."""
        return [channel for channel in self._channels if channel in self._server_side]

    def on_message(self, type: str = "*") -> Callable[[Handler], Handler]:
        """Decorator: call the handler (sync or async) with every frame of this `type` ("*" for all)."""
        return self._handlers.decorator(type)

    # -- requests ------------------------------------------------------------------------------

    async def request(self, action: str, data: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Send one frame and return its reply's `content`; raise ReplyError on an error reply."""
        await self._wait_connected()
        ws = self._ws
        if ws is None:
            raise NotConnected("the connection is closing")
        request_id = str(next(self._request_ids))
        frame: dict[str, Any] = {"action": action, "request_id": request_id}
        if data is not None:
            frame["data"] = data
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        limit = self.request_timeout if timeout is None else timeout
        try:
            await ws.send(json.dumps(frame, ensure_ascii=False))
            reply = await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise RequestTimeout(f"no reply to {action!r} within {limit:g} s") from None
        except ConnectionClosed as closed:
            raise close_error(closed, greeted=True) from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("type") == "error":
            raise ReplyError.from_body(reply.get("content"))
        return reply.get("content")

    async def ping(self) -> float:
        """Round-trip time of a ping to the server, in seconds."""
        started = time.perf_counter()
        await self.request("ping")
        return time.perf_counter() - started

    async def subscribe_to_channel(
        self, channel: str, since: int | None = None, epoch: str | None = None
    ) -> dict[str, Any]:
        """Subscribe, resuming after offset `since` (of the history `epoch`) if given; returns
        `{channel, offset, epoch, recovered}`.

        The channel's retained history (or what followed `since`) arrives next, as envelopes. A
        `since` of another epoch than the channel's is not recovered: nothing is replayed, and
        `on_reset` is called. A server-side channel subscribed to becomes an explicit one.
        """
        server_side = channel in self._server_side
        self._server_side.discard(channel)
        try:
            return await self._subscribe(channel, since, epoch)
        except ReplyError:
            if server_side and channel in self._channels:
                self._server_side.add(channel)
            raise

    async def _subscribe(self, channel: str, since: int | None, epoch: str | None) -> dict[str, Any]:
        known = channel in self._channels
        if epoch and epoch != self._epochs.get(channel):
            self._channels[channel], self._epochs[channel] = since, epoch  # a position of another history
        else:
            self._channels[channel] = _later(self._channels.get(channel), since)
        data: dict[str, Any] = {"channel": channel}
        if since is not None:
            data["since"] = since
            if epoch:
                data["epoch"] = epoch
        self._subscribing[channel] = (since, epoch)
        try:
            return await self.request("subscribe", data)
        except ReplyError:
            if not known:
                self._channels.pop(channel, None)
                self._epochs.pop(channel, None)
            raise
        finally:
            self._subscribing.pop(channel, None)

    def _subscribed(self, content: Any) -> None:
        """A `subscribed` reply, read before the history that follows it: the channel's epoch,
        and its head as our position when nothing is to be replayed (or the history was reset)."""
        channel = content.get("channel") if isinstance(content, dict) else None
        if channel not in self._subscribing or channel not in self._channels:
            return
        since, epoch = self._subscribing.pop(channel)
        offset, current = content.get("offset"), content.get("epoch") or ""
        if not isinstance(offset, int):
            return
        if current:
            self._epochs[channel] = current
        recovered = bool(content.get("recovered"))
        if was_reset(since, epoch, offset, current, recovered):
            self._channels[channel] = offset  # our offsets count for nothing in the new history
            self._reset_floor(channel, current)
            self._emit("reset", ResetContext(channel, current, offset, resumed=True))
        elif offset == (since or 0) or (since is not None and not recovered):
            # Nothing to replay, or what is left of the history follows: the head is our position.
            self._channels[channel] = _later(self._channels[channel], offset)

    def _stream_reset(self, content: Any) -> None:
        """A `stream-reset` frame: the channel's history was reset; offsets start again at 0."""
        if not isinstance(content, dict) or not isinstance(content.get("channel"), str):
            return
        channel, epoch = content["channel"], str(content.get("epoch") or "")
        offset = content.get("offset") if isinstance(content.get("offset"), int) else 0
        if channel in self._channels:
            self._channels[channel] = offset
            self._epochs[channel] = epoch
        self._reset_floor(channel, epoch)
        self._emit("reset", ResetContext(channel, epoch, offset, resumed=False))

    async def snapshot(self, channel: str) -> dict[str, Any]:
        """A live channel's snapshot: `{channel, offset, epoch, data, has_more}` — the application's
        data and the channel's position, read in one transaction. ReplyError `forbidden`,
        `not_found` (no such object, or not a live channel) or `invalid_channel` otherwise."""
        return await self.request("snapshot", {"channel": channel})

    async def subscribe_with_snapshot(self, channel: str) -> dict[str, Any]:
        """Take a live channel's snapshot, then follow the channel from its position: returns the
        snapshot (as `snapshot()`), and the envelopes of the channel delivered after it are
        exactly those published after what its `data` shows — no gap, no duplicate.

        The subscription sends `since` = the snapshot's offset and `epoch` = its epoch, and that
        position is what a reconnection resumes from. On a channel followed already (subscribed,
        or joined by the server) nothing is subscribed again: its position moves to the
        snapshot's, and envelopes up to the snapshot's offset that arrive after it are dropped.
        The snapshot reply reaches `on_message("snapshot")` handlers in order with the envelopes.
        Raises ReplyError (`forbidden`, `not_found`, …) as `snapshot()`, subscribing to nothing.
        """
        self._snapshotting[channel] = self._snapshotting.get(channel, 0) + 1
        try:
            snapshot = await self.snapshot(channel)
        finally:
            self._snapshotting[channel] -= 1
            if not self._snapshotting[channel]:
                del self._snapshotting[channel]
        if channel not in self._channels:
            await self.subscribe_to_channel(channel, snapshot["offset"], snapshot.get("epoch") or None)
        return snapshot

    def _snapshot_taken(self, content: Any) -> None:
        """A `snapshot` reply, read before the frames that follow it: on a channel followed already
        and awaited by subscribe_with_snapshot, the snapshot's position becomes the channel's and
        its envelopes up to there are dropped from now on."""
        channel = content.get("channel") if isinstance(content, dict) else None
        if channel not in self._snapshotting or channel not in self._channels:
            return
        offset, epoch = content.get("offset"), content.get("epoch") or ""
        if not isinstance(offset, int):
            return
        if epoch and epoch != self._epochs.get(channel):
            self._channels[channel], self._epochs[channel] = offset, epoch
        else:
            self._channels[channel] = _later(self._channels[channel], offset)
        self._set_floor(channel, offset, epoch)

    async def unsubscribe_from_channel(self, channel: str) -> dict[str, Any]:
        """Leave a channel; it is no longer restored after reconnections."""
        content = await self.request("unsubscribe", {"channel": channel})
        self._channels.pop(channel, None)
        self._epochs.pop(channel, None)
        self._floors.pop(channel, None)
        self._server_side.discard(channel)
        self.recovery.pop(channel, None)
        return content

    async def send_to_channel(
        self, channel: str, content: Any, persist: bool = False, type: str | None = None, id: str | None = None
    ) -> dict[str, Any]:
        """Publish to a channel; returns the ack `{id, offset?}` (`offset` when persisted). With
        `id`, a retry after a lost ack is answered with the first ack and not published again."""
        data: dict[str, Any] = {"channel": channel, "content": content}
        if type is not None:
            data["type"] = type
        if persist:
            data["persist"] = True
        if id is not None:
            data["id"] = id
        return await self.request("send_to_channel", data)

    async def publish_batch(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish several messages over HTTP at once, with this client's credentials (see
        `HTTPPublisher.publish_batch`)."""
        if self._publisher is None:
            self._publisher = HTTPPublisher(self.endpoint, timeout=self.request_timeout)
        return await self._publisher.publish_batch(messages)

    async def send_to_user(self, user_id: str, content: Any, type: str | None = None) -> dict[str, Any]:
        """Send to every connection of a user; returns the ack `{id}`."""
        data: dict[str, Any] = {"user_id": user_id, "content": content}
        if type is not None:
            data["type"] = type
        return await self.request("send_to_user", data)

    async def send_message(self, content: Any) -> dict[str, Any]:
        """Send a client message: echoed to this user's connections and handed to the server's signal."""
        return await self.request("message", {"content": content})

    async def history(
        self, channel: str, since: int | None = None, limit: int | None = None, epoch: str | None = None
    ) -> dict[str, Any]:
        """A page of retained history: `{channel, offset, epoch, messages, recovered, has_more}`.
        With `epoch`, a `since` of another epoch (the history was reset since) is not recovered."""
        data: dict[str, Any] = {"channel": channel}
        if since is not None:
            data["since"] = since
        if limit is not None:
            data["limit"] = limit
        if epoch:
            data["epoch"] = epoch
        return await self.request("history", data)

    async def presence(self, channel: str, counts_only: bool = False) -> dict[str, Any]:
        """Who is on a channel: `{channel, connections, user_count, users}`; with `counts_only`,
        the counts without `users` (allowed on channels whose presence is off too)."""
        data: dict[str, Any] = {"channel": channel}
        if counts_only:
            data["counts_only"] = True
        return await self.request("presence", data)

    async def refresh_token(self, token: str) -> dict[str, Any]:
        """Replace the connection's token (same user); reconnections use the new one."""
        content = await self.request("refresh", {"token": token})
        self.endpoint.token = token
        return content

    # -- the connection ------------------------------------------------------------------------

    async def _open(self) -> None:
        try:
            ws = await websockets.connect(
                self.url,
                additional_headers=self.endpoint.headers(),
                open_timeout=self.open_timeout,
                close_timeout=self.close_timeout,
                max_size=self.max_message_size,
            )
        except InvalidStatus as refused:
            response = refused.response
            raise refusal_error(
                response.status_code,
                (response.body or b"").decode(errors="replace")[:200] or str(refused),
                retry_after_seconds(response.headers.get("Retry-After")),
            ) from None
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as error:
            raise ConnectFailed(f"cannot connect to {self.url}: {describe(error)}") from error
        self.connection = await self._greeting(ws)
        self._ws = ws

    async def _greeting(self, ws: ClientConnection) -> ConnectedContext:
        """Wait for `connected`; a refusal arrives instead as a close (4401, 4403, 1013)."""
        try:
            async with asyncio.timeout(self.open_timeout):
                text = await ws.recv()
        except ConnectionClosed as closed:
            raise close_error(closed, greeted=False) from None
        except TimeoutError:
            await ws.close()
            raise ConnectFailed(f"no greeting from {self.url} within {self.open_timeout:g} s") from None
        frame = _decode(text)
        if not isinstance(frame, dict) or frame.get("type") != "connected" or not isinstance(frame.get("data"), dict):
            await ws.close()
            raise ConnectFailed(f"expected a `connected` greeting, got {str(text)[:100]!r}")
        data = frame["data"]
        interval = data.get("heartbeat_interval")
        interval = float(interval) if isinstance(interval, int | float) and interval > 0 else 0.0
        self._silence_limit = 2 * interval or None
        server_side = self._join_server_side(data.get("channels"))
        refused = data.get("refused")
        self._dispatch(("connected",), frame)
        return ConnectedContext(
            connection_id=str(data.get("connection_id")),
            user_id=data.get("user_id"),
            heartbeat_interval=interval,
            channels=list(self._channels),
            greeting=frame,
            server_channels=server_side,
            refused=dict(refused) if isinstance(refused, dict) else {},
            info=data.get("info"),
        )

    def _join_server_side(self, channels: Any) -> list[str]:
        """The greeting's server-side channels count as subscribed; those of the last connection
        that this one lacks are forgotten."""
        server_side = [channel for channel in channels or () if isinstance(channel, str)]
        explicit = set(self._channels) - self._server_side
        for channel in self._server_side.difference(server_side):
            self._channels.pop(channel, None)
            self._epochs.pop(channel, None)
            self._floors.pop(channel, None)
            self.recovery.pop(channel, None)
        self._server_side = {channel for channel in server_side if channel not in explicit}
        for channel in server_side:
            self._channels.setdefault(channel, None)
        return server_side

    async def _read(self) -> ClientError:
        ws = self._ws
        assert ws is not None
        while True:
            try:
                async with asyncio.timeout(self._silence_limit):
                    text = await ws.recv()
            except TimeoutError:
                return ConnectionLost(f"no frame from the server for {self._silence_limit:g} s (two heartbeats)")
            except ConnectionClosed as closed:
                return close_error(closed, greeted=True)
            await self._receive(ws, text)

    async def _receive(self, ws: ClientConnection, text: str | bytes) -> None:
        """Resolve the request a reply answers, answer heartbeats, drop duplicates, dispatch."""
        frame = _decode(text)
        if not isinstance(frame, dict):
            self._report(ClientError(f"a frame that is not a JSON object: {str(text)[:100]!r}"), "reading")
            return
        request_id = frame.get("request_id")
        if request_id is not None:
            future = self._pending.pop(str(request_id), None)
            if future is not None and not future.done():
                future.set_result(frame)
        kind = str(frame.get("type"))
        if kind == "heartbeat":
            with contextlib.suppress(ConnectionClosed):  # the read loop sees the close next
                await ws.send('{"action":"pong"}')
        elif kind == "subscribed":
            self._subscribed(frame.get("content"))
        elif kind == "stream-reset":
            self._stream_reset(frame.get("content"))
        elif kind == "snapshot":
            self._snapshot_taken(frame.get("content"))
        elif is_envelope(frame):
            if not self._accept(frame):
                return
            self._note_offset(frame)
        self._dispatch((kind,), frame)

    def _note_offset(self, envelope: dict[str, Any]) -> None:
        channel, offset = envelope.get("channel"), envelope.get("offset")
        if channel in self._channels and isinstance(offset, int):
            self._channels[channel] = _later(self._channels[channel], offset)

    async def _restore(self) -> dict[str, bool]:
        recovered: dict[str, bool] = {}
        for channel, since in list(self._channels.items()):
            if channel in self._server_side and since is None:
                recovered[channel] = False  # joined by the server again; no position to resume from
                continue
            epoch = self._epochs.get(channel) if since is not None else None
            try:
                content = await self._subscribe(channel, since, epoch)
            except ReplyError as error:
                self._channels.pop(channel, None)
                self._epochs.pop(channel, None)
                self._floors.pop(channel, None)
                self._server_side.discard(channel)
                self._report(error, f"resubscribing to {channel!r}")
                recovered[channel] = False
                continue
            recovered[channel] = since is not None and bool(content.get("recovered"))
        return recovered

    async def _release(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.aclose()

    async def _close_transport(self, error: ClientError) -> None:
        ws, self._ws = self._ws, None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(_request_failure(error))
        if isinstance(error, NotConnected):  # our own disconnect: close cleanly before returning
            if ws is not None:
                await ws.close()
            await asyncio.gather(*self._closing, return_exceptions=True)
        elif ws is not None:  # lost or silent: a close handshake may never be answered; don't wait for it
            closing = asyncio.create_task(ws.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)


def create_ws_client(
    host: str = "localhost",
    port: int = 8000,
    token: str | None = None,
    api_key: str | None = None,
    secure: bool = False,
    auto_reconnect: bool = True,
    max_reconnect_attempts: int | None = 10,
    reconnect_interval: float = 5,
    **options: Any,
) -> WebSocketClient:
    """The design document's factory: a WebSocketClient (see it and ReconnectingClient for `options`)."""
    return WebSocketClient(
        host,
        port,
        token=token,
        api_key=api_key,
        secure=secure,
        auto_reconnect=auto_reconnect,
        max_reconnect_attempts=max_reconnect_attempts,
        reconnect_interval=reconnect_interval,
        **options,
    )


def _decode(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _later(current: int | None, offset: int | None) -> int | None:
    """The later of two positions, where None means "none yet"."""
    if current is None:
        return offset
    return current if offset is None else max(current, offset)


def _request_failure(error: ClientError) -> ClientError:
    """What a request waiting for its reply raises when the connection ends first."""
    if isinstance(error, NotConnected):
        return NotConnected(str(error))
    failure = ConnectionLost(f"the connection ended before the reply: {error}", getattr(error, "code", None))
    failure.__cause__ = error
    return failure
