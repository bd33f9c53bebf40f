"""The Server-Sent Events client of `/sse/connect` (README, "Server-Sent Events"), with HTTP publishing helpers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

import httpx

from realtime_client.contexts import ClientState, ConnectedContext, ResetContext
from realtime_client.dedup import is_envelope
from realtime_client.endpoint import DEFAULT_API_KEY_HEADER, Endpoint, refusal_error, retry_after_seconds
from realtime_client.exceptions import (
    AuthenticationFailed,
    ClientError,
    ConnectFailed,
    ConnectionLost,
    NotConnected,
    Refused,
    RequestTimeout,
    describe,
)
from realtime_client.handlers import Handler
from realtime_client.positions import parse_event_id, was_reset, with_positions
from realtime_client.publisher import HTTPPublisher
from realtime_client.reconnecting import ReconnectingClient, Reopen
from realtime_client.sse_decoder import ServerSentEvent, SSEDecoder

# A `stream-error` condition, as the WebSocket close code that means the same.
CONDITION_CODES = {
    "closed": 4409,
    "slow-consumer": 4429,
    "shutdown": 1001,
    "unauthenticated": 4401,
    "unavailable": 1013,
}
# The design document listens for the server's stream errors under "error".
EVENT_ALIASES = {"stream-error": "error"}


def stream_error(data: Any) -> ClientError:
    """The error a `stream-error` event announces: fatal when the credentials expired."""
    condition = data.get("condition") if isinstance(data, dict) else None
    text = (data.get("text") if isinstance(data, dict) else None) or condition or "stream error"
    code = CONDITION_CODES.get(condition or "")
    if condition == "unauthenticated":
        return AuthenticationFailed(text, code)
    return ConnectionLost(f"{condition}: {text}", code)


class SSEClient(ReconnectingClient):
    """An SSE client that resumes with `Last-Event-ID` after reconnecting.

    Handlers get `{"event": name, "data": <parsed JSON, else text>, "id": <the event's id or None>}`;
    a server `stream-error` also reaches handlers of `"error"`. Envelopes seen twice are dropped.
    A reconnection sends the last event id: missed persisted messages are replayed, and a channel
    whose history no longer reaches back gets `stream-reset`, so `client.recovery[channel]` is False.
    The id is the stream's position (`channel:offset-epoch,…`), resent as it came; `positions`
    reads it. A channel whose history was reset (a `stream-reset` after `stream-open`, or a
    resumption from another epoch) is reported to `on_reset`. `subscribe_with_snapshot` adds a
    channel from a snapshot's position, reopening the stream at once.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8000,
        *,
        token: str | None = None,
        api_key: str | None = None,
        secure: bool = False,
        channels: Iterable[str] = (),
        path: str = "/sse/connect",
        api_key_header: str = DEFAULT_API_KEY_HEADER,
        **options: Any,
    ) -> None:
        super().__init__(Endpoint(host, port, secure, token, api_key, api_key_header), **options)
        self.path = path
        self.channels = list(channels)
        self.last_event_id: str | None = None
        self.retry: float | None = None  # the server's suggested reconnection delay, in seconds
        self.publisher = HTTPPublisher(self.endpoint, timeout=self.request_timeout)
        self._http: httpx.AsyncClient | None = None
        self._response: httpx.Response | None = None
        self._events: AsyncGenerator[ServerSentEvent, None] | None = None
        self._decoder = SSEDecoder()
        self._resumed_from: str | None = None
        self._reset: set[str] = set()
        self._stream_open = asyncio.Event()
        self._ending: ClientError | None = None
        self._silence_limit: float | None = None
        self._stream_channels: list[str] = []  # the channels the current stream asked for
        self._starting: dict[str, tuple[int, str]] = {}  # positions the next stream opens channels at
        self._reopen: str | None = None  # why the stream is to be reopened with the current channels
        self._deadline: asyncio.Timeout | None = None  # the wait for the next event, while there is one
        self._carrying: dict[asyncio.Future[None], str] = {}  # a stream with this channel, awaited

    @property
    def url(self) -> str:
        return self.endpoint.http_url(self.path)

    @property
    def positions(self) -> dict[str, tuple[int, str]]:
        """The stream's position per channel, (offset, epoch), as the last event id says."""
        return parse_event_id(self.last_event_id)

    @property
    def server_channels(self) -> list[str]:
        """The channels the server added to the stream at connect (the token's `subs` claim, the
        application's connect hook)."""
        return list(self.connection.server_channels) if self.connection else []

    def on_event(self, event: str = "*") -> Callable[[Handler], Handler]:
        """Decorator: call the handler (sync or async) with every event of this name ("*" for all)."""
        return self._handlers.decorator(event)

    async def connect(self, channels: Iterable[str] | None = None) -> None:
        """Open the stream of `channels` (else the constructor's), plus `broadcast` and the user's own."""
        if channels is not None:  # channels added from a snapshot stay
            asked = list(channels)
            self.channels = [*asked, *(channel for channel in self._starting if channel not in asked)]
        await super().connect()

    # -- publishing over HTTP ------------------------------------------------------------------

    async def send_notification(
        self,
        title: str,
        content: str,
        type: str = "info",
        auto_hide: bool | None = None,
        duration: int | None = None,
        channel: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """Store and deliver a notification to everyone, a channel or a user; returns `{id, notification_id}`."""
        return await self.publisher.send_notification(
            title, content, type=type, auto_hide=auto_hide, duration=duration, channel=channel, user_id=user_id
        )

    async def send_to_channel(self, channel: str, event: str, data: Any, persist: bool = False) -> dict[str, Any]:
        """Publish an event to a channel (envelope `type` = event); returns `{id, offset?}`."""
        return await self.publisher.send_event(channel, event, data, persist=persist)

    async def send_to_user(self, user_id: str, content: Any, type: str | None = None) -> dict[str, Any]:
        """Send to every connection of a user, on both transports; returns `{id}`."""
        return await self.publisher.send_to_user(user_id, content, type=type)

    async def broadcast(self, content: Any, type: str | None = None, id: str | None = None) -> dict[str, Any]:
        """Send to every connection of both transports; returns `{id}`."""
        return await self.publisher.broadcast(content, type=type, id=id)

    async def publish_batch(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish several messages over HTTP at once (see `HTTPPublisher.publish_batch`)."""
        return await self.publisher.publish_batch(messages)

    # -- snapshots -----------------------------------------------------------------------------

    async def snapshot(self, channel: str) -> dict[str, Any]:
        """A live channel's snapshot over HTTP (`GET /api/channels/<name>/snapshot/`): `{channel,
        offset, epoch, data, has_more}`. ReplyError `forbidden` / `not_found` (with its `status`)."""
        return await self.publisher.snapshot(channel)

    async def subscribe_with_snapshot(self, channel: str) -> dict[str, Any]:
        """Take a live channel's snapshot over HTTP, then add the channel to the stream from its
        position; returns the snapshot. The channel's events delivered after it are exactly those
        published after what its `data` shows — no gap, no duplicate.

        A connected client reopens its stream at once with the channel added and `Last-Event-ID`
        holding the snapshot's position (the other channels resume from theirs), and returns once
        that stream is open; a disconnected one opens with it on `connect()`. On a channel the
        stream carries already nothing is reopened: its events up to the snapshot's offset that
        arrive after it are dropped. `on_event("snapshot")` handlers get `{"event": "snapshot",
        "data": <the snapshot>, "id": None}` in order with the events. Raises ReplyError as
        `snapshot()`, adding nothing.
        """
        snapshot = await self.snapshot(channel)
        offset, epoch = snapshot["offset"], snapshot.get("epoch") or ""
        carried = channel in self.channels or channel in self.server_channels
        if carried:
            self._set_floor(channel, offset, epoch)
        else:
            self.channels.append(channel)
            self._starting[channel] = (offset, epoch)
        self._dispatch(("snapshot",), {"event": "snapshot", "data": snapshot, "id": None})
        if not carried and self.state in (ClientState.CONNECTING, ClientState.CONNECTED):
            await self._reopen_with(channel, f"subscribed to {channel} from a snapshot")
        return snapshot

    async def _reopen_with(self, channel: str, reason: str) -> None:
        """Reopen the stream with the current channels and wait until one carrying `channel` is open."""
        self._reopen = reason
        if self._deadline is not None:  # the reader waits for the next event: end that wait now
            self._deadline.reschedule(asyncio.get_running_loop().time())
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._carrying[opened] = channel
        try:
            async with asyncio.timeout(self.request_timeout):
                await opened
        except TimeoutError:
            raise RequestTimeout(f"no stream with {channel!r} opened within {self.request_timeout:g} s") from None
        finally:
            self._carrying.pop(opened, None)

    # -- the stream ----------------------------------------------------------------------------

    async def _open(self) -> None:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **self.endpoint.headers()}
        self._reopen = None  # this stream asks for the channels as they are now
        self._stream_channels = list(self.channels)
        if self._starting:
            self.last_event_id = with_positions(self.last_event_id, self._starting)
            self._starting = {}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        params = {"channels": ",".join(self.channels)} if self.channels else None
        http = self._client()
        request = http.build_request("GET", self.url, params=params, headers=headers)
        try:
            async with asyncio.timeout(self.open_timeout):  # the client's read timeout is off: bound the headers
                response = await http.send(request, stream=True)
        except TimeoutError:
            raise ConnectFailed(f"no response from {self.url} within {self.open_timeout:g} s") from None
        except httpx.TransportError as error:
            raise ConnectFailed(f"cannot connect to {self.url}: {describe(error)}") from error
        if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise await self._refusal(response)
        self._response = response
        self._decoder = SSEDecoder()
        self._decoder.last_event_id = self.last_event_id
        self._events = self._decoder.events(response.aiter_lines())
        self._resumed_from = request.headers.get("Last-Event-ID")  # what the server was actually asked
        self._reset.clear()
        self._stream_open.clear()
        self._ending = None
        try:
            self.connection = await self._greeting()
        except BaseException:
            await self._close_transport(ConnectionLost("no greeting"))
            raise

    async def _refusal(self, response: httpx.Response) -> ClientError:
        """The error for a response that is not a stream: 401/403 fatal, 5xx retryable, other 4xx fatal."""
        try:
            async with asyncio.timeout(self.open_timeout):
                body = await response.aread()
        except (httpx.HTTPError, TimeoutError):
            body = b""
        finally:
            await response.aclose()
        detail = _error_detail(body) or f"HTTP {response.status_code}"
        if response.status_code == 200:
            return Refused(f"not an event stream: {response.headers.get('content-type')}", 200)
        return refusal_error(response.status_code, detail, retry_after_seconds(response.headers.get("retry-after")))

    async def _greeting(self) -> ConnectedContext:
        """Read up to the `connected` event (after `retry:`)."""
        try:
            async with asyncio.timeout(self.open_timeout):
                event = await self._next_event()
                while event is not None and event.event != "connected":
                    event = await self._next_event()
        except TimeoutError:
            raise ConnectFailed(f"no greeting from {self.url} within {self.open_timeout:g} s") from None
        except httpx.HTTPError as error:
            raise ConnectFailed(f"the stream broke before the greeting: {error}") from error
        frame = _parse(event.data) if event is not None else None
        if not isinstance(frame, dict) or not isinstance(frame.get("data"), dict):
            raise ConnectFailed(f"expected a `connected` event from {self.url}")
        data = frame["data"]
        interval = data.get("heartbeat_interval")
        interval = float(interval) if isinstance(interval, int | float) and interval > 0 else 0.0
        self._silence_limit = 2 * interval or None
        self.retry = self._decoder.retry / 1000 if self._decoder.retry is not None else None
        self._dispatch(("connected",), {"event": "connected", "data": frame, "id": event.id})
        channels = list(data.get("channels") or self.channels)
        implicit = {"broadcast", f"user:{data.get('user_id')}"}
        refused = data.get("refused")
        return ConnectedContext(
            connection_id=str(data.get("connection_id")),
            user_id=data.get("user_id"),
            heartbeat_interval=interval,
            channels=channels,
            greeting=frame,
            server_channels=[c for c in channels if c not in self.channels and c not in implicit],
            refused=dict(refused) if isinstance(refused, dict) else {},
            info=data.get("info"),
        )

    async def _next_event(self) -> ServerSentEvent | None:
        assert self._events is not None
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            return None

    async def _read(self) -> ClientError:
        while True:
            if self._reopen is not None:
                return Reopen(self._reopen)
            try:
                async with asyncio.timeout(self._silence_limit) as self._deadline:
                    event = await self._next_event()
            except TimeoutError:
                if self._reopen is not None:
                    return Reopen(self._reopen)
                return ConnectionLost(f"no event from the server for {self._silence_limit:g} s (two heartbeats)")
            except httpx.HTTPError as error:
                return self._ending or ConnectionLost(f"the stream broke: {describe(error)}")
            finally:
                self._deadline = None
            if event is None:
                return self._ending or ConnectionLost("the server ended the stream")
            self._receive(event)

    def _receive(self, event: ServerSentEvent) -> None:
        """Track the resume position and the replay's outcome, drop duplicates, dispatch."""
        self.last_event_id = self._decoder.last_event_id
        data = _parse(event.data)
        name = event.event
        if name == "stream-reset" and isinstance(data, dict):
            if self._stream_open.is_set():  # live: the channel's history was reset just now
                positions = parse_event_id(event.id)
                for channel in data.get("channels") or ():
                    offset, epoch = positions.get(channel, (0, ""))
                    self._reset_floor(channel, epoch)
                    self._emit("reset", ResetContext(channel, epoch, offset, resumed=False))
            else:  # the resumption did not recover the channel
                self._reset.update(data.get("channels") or ())
        elif name == "stream-open":
            self._stream_opened()
        elif name == "stream-error":
            self._ending = stream_error(data)
        elif is_envelope(data) and not self._accept(data):
            return
        names = (name, EVENT_ALIASES[name]) if name in EVENT_ALIASES else (name,)
        self._dispatch(names, {"event": name, "data": data, "id": event.id})

    def _stream_opened(self) -> None:
        """`stream-open`: the replay is over; a channel not recovered from a position of another
        epoch (or past the channel's head) had its history reset."""
        resumed, positions = parse_event_id(self._resumed_from), self.positions
        for channel in sorted(self._reset):
            if channel not in resumed or channel not in positions:
                continue
            (since, epoch), (offset, current) = resumed[channel], positions[channel]
            if was_reset(since, epoch, offset, current, recovered=False):
                self._reset_floor(channel, current)
                self._emit("reset", ResetContext(channel, current, offset, resumed=True))
        self._stream_open.set()
        for waiter, channel in self._carrying.items():
            if channel in self._stream_channels and not waiter.done():
                waiter.set_result(None)

    async def _restore(self) -> dict[str, bool]:
        """Resuming happened in the request (Last-Event-ID); wait until the replay is over."""
        try:
            async with asyncio.timeout(self.request_timeout):
                await self._stream_open.wait()
        except TimeoutError:
            raise RequestTimeout(f"the resumed stream did not open within {self.request_timeout:g} s") from None
        resumed = parse_event_id(self._resumed_from)
        channels = [*self.channels, *self.server_channels]
        return {channel: channel in resumed and channel not in self._reset for channel in channels}

    async def _release(self) -> None:
        for waiter in self._carrying:
            if not waiter.done():
                waiter.set_exception(self.error or NotConnected("the client disconnected"))
        await self.publisher.aclose()
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def _close_transport(self, error: ClientError) -> None:
        events, self._events = self._events, None
        response, self._response = self._response, None
        if events is not None:
            await events.aclose()
        if response is not None:
            await response.aclose()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            timeout = httpx.Timeout(self.open_timeout, read=None)  # reads are bounded by heartbeats instead
            self._http = httpx.AsyncClient(timeout=timeout)
        return self._http


def create_sse_client(
    host: str = "localhost",
    port: int = 8000,
    token: str | None = None,
    api_key: str | None = None,
    secure: bool = False,
    auto_reconnect: bool = True,
    max_reconnect_attempts: int | None = 10,
    reconnect_interval: float = 5,
    channels: Iterable[str] = (),
    **options: Any,
) -> SSEClient:
    """The design document's factory: an SSEClient (see it and ReconnectingClient for `options`)."""
    return SSEClient(
        host,
        port,
        token=token,
        api_key=api_key,
        secure=secure,
        channels=channels,
        auto_reconnect=auto_reconnect,
        max_reconnect_attempts=max_reconnect_attempts,
        reconnect_interval=reconnect_interval,
        **options,
    )


def _parse(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data


def _error_detail(body: bytes) -> str:
    """`code: text` from the protocol's error body, else the body's start."""
    text = body.decode(errors="replace")
    parsed = _parse(text)
    if isinstance(parsed, dict) and "type" in parsed:
        return f"{parsed['type']}: {parsed.get('error', '')}"
    return text[:200]
