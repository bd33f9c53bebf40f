"""An in-process WebSocket client: the product's protocol against an ASGI application, no sockets.

`RealtimeTestClient` drives the application through channels' `WebsocketCommunicator` (the same
ASGI messages a server would send) and speaks the protocol of README "WebSocket protocol":
requests carry a `request_id` and wait for the reply carrying it back, an `error` reply raises
`ReplyError`, and the frames that arrive meanwhile (deliveries, heartbeats) are kept in order for
`receive_message` / `receive`. A close by the server raises `ConnectionClosed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

__all__ = ["DEFAULT_TIMEOUT", "ConnectionClosed", "RealtimeTestClient", "ReplyError", "make_token"]

DEFAULT_TIMEOUT = 3.0
NO_MESSAGE_TIMEOUT = 0.2


def make_token(user_id: str, *, expires_minutes: int | None = None, **claims: Any) -> str:
    """A signed access token (JWT) for `user_id` with extra claims (`role="admin"`, `name=…`,
    `channels=["private-team-*"]`), as `authenticator.create_access_token` makes them."""
    from streaming.auth import authenticator

    return authenticator.create_access_token({**claims, "sub": user_id}, expires_minutes=expires_minutes)


class ReplyError(Exception):
    """The server answered a request with an `error` reply."""

    def __init__(self, frame: dict[str, Any]) -> None:
        content = frame.get("content") or {}
        self.frame = frame
        self.code: str = content.get("type", "")
        self.detail: str = content.get("error", "")
        self.fields: dict[str, Any] | None = content.get("fields")
        super().__init__(f"{self.code}: {self.detail}" + (f" {self.fields}" if self.fields else ""))


class ConnectionClosed(Exception):
    """The server closed the connection (or refused it): `code` and `reason` of its close."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed by the server: {code} {reason}".rstrip())


def is_envelope(frame: dict[str, Any]) -> bool:
    """A delivered message (the envelope), as opposed to a reply, greeting or heartbeat."""
    return "id" in frame and "channel" in frame and "timestamp" in frame


class RealtimeTestClient:
    """One WebSocket connection to an ASGI application, in process.

    ::

        async with RealtimeTestClient(application, token=make_token("u1")) as client:
            await client.subscribe("news")
            await client.publish("news", {"title": "hi"})
            envelope = await client.receive_message(channel="news")

    `query` and `headers` add to the handshake (`headers` as `[(b"name", b"value")]` or a dict);
    `timeout` is the default wait of every method, in seconds.
    """

    def __init__(
        self,
        application: Any,
        path: str = "/ws/connect",
        *,
        token: str | None = None,
        api_key: str | None = None,
        query: dict[str, Any] | str | None = None,
        headers: list[tuple[bytes, bytes]] | dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.application = application
        params = dict(query) if isinstance(query, dict) else {}
        if token is not None:
            params["token"] = token
        if api_key is not None:
            params["api_key"] = api_key
        query_string = "&".join(filter(None, [query if isinstance(query, str) else "", urlencode(params)]))
        self.path = path + (f"?{query_string}" if query_string else "")
        if isinstance(headers, dict):
            headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self.headers = list(headers or [])
        self.subprotocols = subprotocols
        self.timeout = timeout
        self.greeting: dict[str, Any] | None = None
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._communicator: Any = None
        self._frames: deque[dict[str, Any]] = deque()  # arrived, not yet taken
        self._ids = itertools.count(1)
        self._closed = False

    # -- connection --------------------------------------------------------------------------

    async def connect(self, *, greet: bool = True) -> dict[str, Any] | None:
        """Open the connection and (with `greet`) read the `connected` greeting, which is returned
        and kept in `greeting`. Raises ConnectionClosed when the server refuses or closes it."""
        from channels.testing import WebsocketCommunicator

        if self._communicator is not None:
            raise RuntimeError("this client has connected already")
        self._communicator = WebsocketCommunicator(self.application, self.path, self.headers, self.subprotocols)
        await self._communicator.send_input({"type": "websocket.connect"})
        event = await self._output(self.timeout)
        if event["type"] == "websocket.close":
            self._closed_by_server(event)
        if event["type"] != "websocket.accept":
            raise AssertionError(f"unexpected ASGI message during the handshake: {event!r}")
        self.subprotocol = event.get("subprotocol")
        if not greet:
            return None
        greeting = await self._read(self.timeout)
        if greeting.get("type") != "connected":
            raise AssertionError(f"expected the `connected` greeting, got {greeting!r}")
        self.greeting = greeting
        return greeting

    async def close(self, code: int = 1000) -> None:
        """Close the connection from the client side and wait for the application to finish."""
        communicator = self._communicator
        if communicator is None or self._closed:
            self._closed = True
            return
        self._closed = True
        if not communicator.future.done():
            await communicator.send_input({"type": "websocket.disconnect", "code": code})
        with contextlib.suppress(asyncio.CancelledError):
            await communicator.wait(self.timeout)

    async def __aenter__(self) -> RealtimeTestClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._communicator is not None and not self._closed

    @property
    def connection_id(self) -> str | None:
        return (self.greeting or {}).get("data", {}).get("connection_id")

    @property
    def user_id(self) -> str | None:
        return (self.greeting or {}).get("data", {}).get("user_id")

    # -- requests ----------------------------------------------------------------------------

    async def request(self, action: str, /, *, timeout: float | None = None, **data: Any) -> dict[str, Any]:
        """Send `{"action", "data", "request_id"}` and return the reply frame carrying the
        request_id back (`{"type", "content", "request_id"}`); ReplyError on an `error` reply.
        Data fields that are None are left out."""
        request_id = f"t{next(self._ids)}"
        frame: dict[str, Any] = {"action": action, "request_id": request_id}
        fields = {key: value for key, value in data.items() if value is not None}
        if fields:
            frame["data"] = fields
        await self.send_json(frame)
        reply = await self._take(lambda f: f.get("request_id") == request_id, timeout, f"the reply to {action!r}")
        if reply.get("type") == "error":
            raise ReplyError(reply)
        return reply

    async def _expect(self, reply_type: str, action: str, /, **data: Any) -> Any:
        reply = await self.request(action, **data)
        if reply.get("type") != reply_type:
            raise AssertionError(f"expected a {reply_type!r} reply to {action!r}, got {reply!r}")
        return reply.get("content")

    async def ping(self) -> dict[str, Any]:
        """`ping` → the `pong` content `{timestamp}`."""
        return await self._expect("pong", "ping")

    async def subscribe(self, channel: str, since: int | None = None, epoch: str | None = None) -> dict[str, Any]:
        """Subscribe; returns the `subscribed` content `{channel, offset, epoch, recovered}`. The
        history envelopes the server sends after it come through `receive_message`."""
        return await self._expect("subscribed", "subscribe", channel=channel, since=since, epoch=epoch)

    async def unsubscribe(self, channel: str) -> dict[str, Any]:
        """Unsubscribe; returns the `unsubscribed` content `{channel}`."""
        return await self._expect("unsubscribed", "unsubscribe", channel=channel)

    async def publish(
        self, channel: str, content: Any, type: str | None = None, persist: bool = False, id: str | None = None
    ) -> dict[str, Any]:
        """`send_to_channel`; returns the `ack` content `{id, offset?}`."""
        return await self._expect(
            "ack", "send_to_channel", channel=channel, content=content, type=type, persist=persist or None, id=id
        )

    async def send_to_user(self, user_id: str, content: Any, type: str | None = None) -> dict[str, Any]:
        """`send_to_user`; returns the `ack` content `{id}`."""
        return await self._expect("ack", "send_to_user", user_id=user_id, content=content, type=type)

    async def history(
        self, channel: str, since: int | None = None, limit: int | None = None, epoch: str | None = None
    ) -> dict[str, Any]:
        """`history`; returns `{channel, offset, epoch, messages, recovered, has_more}`."""
        return await self._expect("history", "history", channel=channel, since=since, limit=limit, epoch=epoch)

    async def presence(self, channel: str, counts_only: bool = False) -> dict[str, Any]:
        """`presence`; returns `{channel, connections, user_count, users?}`."""
        return await self._expect("presence", "presence", channel=channel, counts_only=counts_only or None)

    async def snapshot(self, channel: str) -> dict[str, Any]:
        """`snapshot` of a live channel; returns `{channel, offset, epoch, data, has_more}`."""
        return await self._expect("snapshot", "snapshot", channel=channel)

    async def refresh(self, token: str) -> dict[str, Any]:
        """`refresh` with a fresh token; returns `{expires_at}`."""
        return await self._expect("refreshed", "refresh", token=token)

    # -- frames ------------------------------------------------------------------------------

    async def send_json(self, frame: Any) -> None:
        """Send one text frame holding `frame` as JSON (any frame, valid or not)."""
        await self.send_text(json.dumps(frame))

    async def send_text(self, text: str) -> None:
        self._require_open()
        await self._communicator.send_input({"type": "websocket.receive", "text": text})

    async def receive(self, timeout: float | None = None, *, heartbeats: bool = False) -> dict[str, Any]:
        """The next frame not taken yet, whatever it is (heartbeats skipped unless asked for)."""
        return await self._take(lambda f: heartbeats or f.get("type") != "heartbeat", timeout, "a frame")

    async def receive_message(
        self, channel: str | None = None, type: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """The next delivered envelope (of `channel`, of `type` when given); others stay queued."""

        def wanted(frame: dict[str, Any]) -> bool:
            return (
                is_envelope(frame)
                and (channel is None or frame["channel"] == channel)
                and (type is None or frame["type"] == type)
            )

        what = "a message" + (f" on {channel!r}" if channel else "") + (f" of type {type!r}" if type else "")
        return await self._take(wanted, timeout, what)

    async def assert_no_message(self, timeout: float = NO_MESSAGE_TIMEOUT, channel: str | None = None) -> None:
        """Assert that no envelope (of `channel`) arrives within `timeout` seconds."""
        try:
            envelope = await self.receive_message(channel=channel, timeout=timeout)
        except TimeoutError:
            return
        raise AssertionError(f"expected no message{f' on {channel!r}' if channel else ''}, got {envelope!r}")

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Frames that arrived and were not taken yet, oldest first."""
        return list(self._frames)

    # -- internals ---------------------------------------------------------------------------

    async def _take(self, wanted: Callable[[dict[str, Any]], bool], timeout: float | None, what: str) -> dict:
        """The first frame, queued or arriving, that `wanted` accepts; the others stay queued."""
        for frame in self._frames:
            if wanted(frame):
                self._frames.remove(frame)
                return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within the timeout; pending frames: {self.pending!r}")
            try:
                frame = await self._read(remaining)
            except TimeoutError:
                raise TimeoutError(f"no {what} within the timeout; pending frames: {self.pending!r}") from None
            if wanted(frame):
                return frame
            self._frames.append(frame)

    async def _read(self, timeout: float) -> dict[str, Any]:
        """The next text frame the application sends, decoded."""
        self._require_open()
        event = await self._output(timeout)
        if event["type"] == "websocket.close":
            self._closed_by_server(event)
        if event["type"] != "websocket.send":
            raise AssertionError(f"unexpected ASGI message: {event!r}")
        if event.get("text") is None:
            raise AssertionError(f"unexpected binary frame: {event.get('bytes')!r}")
        return json.loads(event["text"])

    async def _output(self, timeout: float) -> dict[str, Any]:
        """The next ASGI message of the application. Unlike the communicator's own receive, a
        timeout leaves the application running; an application that ended raises what ended it."""
        communicator = self._communicator
        queue = communicator.output_queue
        if not queue.empty():
            return queue.get_nowait()
        application = communicator.future
        getter = asyncio.ensure_future(queue.get())
        try:
            done, _ = await asyncio.wait({getter, application}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        if application in done:
            application.result()  # raises the application's exception, if it had one
            self._closed = True
            raise ConnectionClosed(None, "the application ended without closing the connection")
        raise TimeoutError

    def _closed_by_server(self, event: dict[str, Any]) -> None:
        self._closed = True
        self.close_code = event.get("code", 1000)
        self.close_reason = event.get("reason") or ""
        raise ConnectionClosed(self.close_code, self.close_reason)

    def _require_open(self) -> None:
        if self._communicator is None:
            raise RuntimeError("the client is not connected: use `async with` or `await client.connect()`")
        if self._closed:
            raise ConnectionClosed(self.close_code, self.close_reason or "the connection is closed")
