"""The Server-Sent Events endpoint `GET /sse/connect` (README, "Server-Sent Events").

An ASGI app rather than a Django view, so that refusals are real HTTP statuses before any stream
and the stream shares the WebSocket's lifecycle (`lifecycle.ClientConnection`: bounded outbox,
daphne backpressure, replay hand-off, expiry). Here is only what is SSE: events with positions,
HTTP refusals and the `stream-error` at the end. A publish is encoded as an SSE frame once per
process and shared by every local stream. django-eventstream supplies the wire details: its SSE encoding,
its `Last-Event-ID` format (`channel:offset,…`) and the `stream-reset` / `stream-error` events;
`streaming.eventstream` plugs our history into its storage interface.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qs, unquote

from django.conf import settings
from django_eventstream.utils import make_id, parse_last_event_id, sse_encode_event

from streaming import hooks, live, protocol, security
from streaming.auth import ANONYMOUS, Identity, subscribe_refusal
from streaming.daphne_adapter.io import DirectWriter, http_chunk
from streaming.errors import InvalidMessage, RateLimited, StreamingError, TooManySubscriptions, Unavailable
from streaming.history import Recovery
from streaming.lifecycle import ClientConnection, admission_refusal, count_refusal, heartbeat_text
from streaming.protocol import CloseCode
from streaming.runtime import Runtime, start_runtime

logger = logging.getLogger(__name__)

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
CONDITIONS = {
    CloseCode.CLOSED_BY_ADMIN: "closed",
    CloseCode.SLOW_CONSUMER: "slow-consumer",
    CloseCode.GOING_AWAY: "shutdown",
    CloseCode.UNAUTHENTICATED: "unauthenticated",
    CloseCode.TRY_AGAIN_LATER: "unavailable",
}


_heartbeat_event: tuple[str | None, bytes] = (None, b"")  # the last heartbeat text, as an event


def sse_event(event: str, data: str, event_id: str | None = None) -> bytes:
    """One SSE event (django-eventstream's encoding)."""
    return sse_encode_event(event, data, event_id=event_id).encode()


def publish_frame(message: dict[str, Any]) -> bytes:
    """The SSE frame of a bus message, without `id:`; encoded once and cached in the message."""
    frame = message.get("sse")
    if frame is None:
        frame = message["sse"] = sse_event(message["event"], message["text"])
    return frame


def publish_chunk(message: dict[str, Any]) -> bytes:
    """`publish_frame` as one chunk of a chunked HTTP body (daphne's direct writes); cached too."""
    chunk = message.get("sse_chunk")
    if chunk is None:
        chunk = message["sse_chunk"] = http_chunk(publish_frame(message))
    return chunk


# ---------------------------------------------------------------------------------------------
# Admission


@dataclass
class Admission:
    """A stream request that passed every check."""

    identity: Identity
    ip: str | None
    user_agent: str
    origin: str | None
    channels: list[str]
    positions: dict[str, tuple[int, str | None]] = field(default_factory=dict)


def _positions(raw: str | None, channels: list[str]) -> dict[str, tuple[int, str | None]]:
    """Parse a Last-Event-ID (`channel:offset-epoch,…`; `channel:offset` from before epochs) into
    (offset, epoch) by channel. Any channel's position is kept: server-side channels are known only
    after the hooks."""
    if not raw or raw == "error":
        return {}
    try:
        parsed = {unquote(channel): _position(value) for channel, value in parse_last_event_id(raw).items()}
    except (ValueError, TypeError):
        raise InvalidMessage("Last-Event-ID is not a position of this server (channel:offset-epoch,…).") from None
    return {channel: position for channel, position in parsed.items() if position[0] >= 0}


def _position(value: str) -> tuple[int, str | None]:
    offset, _, epoch = value.partition("-")
    if not protocol.EPOCH_RE.fullmatch(epoch):
        raise ValueError(value)
    return int(offset), epoch or None


def event_id(positions: dict[str, int], epochs: dict[str, str]) -> str:
    """A stream position as an SSE `id:` (django-eventstream's `channel:position,…`, with each
    position `offset-epoch` once the channel has an epoch)."""
    return make_id({channel: f"{offset}-{epochs[channel]}" if epochs.get(channel) else offset
                    for channel, offset in positions.items()})  # fmt: skip


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def admit(scope: dict[str, Any], runtime: Runtime) -> Admission:
    """Check a stream request (README, "Server-Sent Events"); raise the StreamingError that refuses it."""
    config = settings.REALTIME
    headers = security.scope_headers(scope)
    ip = security.scope_client_ip(scope, headers)
    origin = headers.get("origin")
    identity: Identity = scope.get("identity", ANONYMOUS)
    refused = admission_refusal(runtime, "sse", identity, ip, origin, scope.get("auth_error"))
    if refused is not None and not isinstance(refused, Unavailable | RateLimited):
        raise type(refused)(_sentence(refused.detail))
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    channels = protocol.channel_names(*query.get("channels", []), *query.get("channel", []))
    if len(channels) > config.max_subscriptions_per_connection:
        raise TooManySubscriptions(f"At most {config.max_subscriptions_per_connection} channels per stream.")
    for channel in channels:
        refused_channel, grantable = subscribe_refusal(identity, channel)
        if refused_channel is not None and not (grantable and hooks.configured("subscribe")):
            raise refused_channel  # else the subscribe hook decides (`SSEListener.decide`)
    last_event_id = headers.get("last-event-id") or next((v for v in reversed(query.get("lastEventId", [])) if v), None)
    positions = _positions(last_event_id, channels)
    if refused is not None:  # a full server or a client over its share: after the request's own errors
        raise type(refused)(_sentence(refused.detail))
    return Admission(identity, ip, headers.get("user-agent", ""), origin, channels, positions)


def _cors_headers(origin: str | None) -> list[tuple[bytes, bytes]]:
    if not origin or not security.origin_allowed(origin):
        return []
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


def _stream_headers(origin: str | None) -> list[tuple[bytes, bytes]]:
    return STREAM_HEADERS + _cors_headers(origin)


async def _refuse(send: Any, error: StreamingError, origin: str | None, retry_seconds: int) -> None:
    headers = [(b"content-type", b"application/json"), *_cors_headers(origin)]
    if error.status_code == 401:
        headers.append((b"www-authenticate", b'Bearer realm="sse"'))
    count_refusal("sse", error)
    if error.status_code in (429, 503):
        headers.append((b"retry-after", str(retry_seconds).encode()))
    body = protocol.encode(protocol.error_body(error.code, error.detail, error.fields)).encode()
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# The endpoint


class EventStreamEndpoint:
    """ASGI app of `GET /sse/connect`: admit the request, then serve one stream."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = security.scope_headers(scope)
        runtime = await start_runtime()
        retry_seconds = max(1, settings.REALTIME.sse_retry_timeout // 1000)
        try:
            if scope.get("method") not in ("GET", "HEAD"):
                raise InvalidMessage("Open a stream with GET.")
            admission = admit(scope, runtime)
            listener = SSEListener(admission)
            await listener.decide()
        except StreamingError as error:
            logger.info("refuse transport=sse status=%s reason=%s", error.status_code, error.detail)
            await _refuse(send, error, headers.get("origin"), retry_seconds)
            return
        if scope["method"] == "HEAD":  # the GET's status and headers, and no stream
            await send({"type": "http.response.start", "status": 200, "headers": _stream_headers(admission.origin)})
            await send({"type": "http.response.body", "body": b""})
            return
        await listener.serve(runtime, send, receive)


class SSEListener(ClientConnection):
    """One SSE stream: events with resumable positions, ended by a `stream-error`."""

    transport = "sse"

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.positions: dict[str, int] = {}  # the stream's position: what its `id:` fields say
        self.epochs: dict[str, str] = {}  # the epoch of each position
        self._final = b""
        self.prepare(admission.identity, admission.ip)
        self.opening: list[str] = list(admission.channels)  # requested, then server-side channels
        self.refused: dict[str, str] = {}  # server-side channels refused, with the reason

    async def decide(self) -> None:
        """Ask the application (README, "Hooks"): the connect hook, the subscribe hook for each
        requested channel, then the server-side channels; raises the refusal of the stream."""
        wanted = await self.decide_connect()
        asks = hooks.configured("subscribe")
        for channel in self.admission.channels:
            if asks or live.is_live_channel(channel):  # a live model channel asks its permission
                await hooks.authorize_subscription(self, channel)
        extra = [channel for channel in wanted if channel not in self.admission.channels]
        if extra:
            self.implicit_channels = self._implicit()  # what authorize_server_side skips
            allowed, self.refused = await self.authorize_server_side(extra, len(self.admission.channels))
            self.opening += allowed

    def _implicit(self) -> list[str]:
        personal = self.identity.personal_channel
        return [protocol.BROADCAST, personal] if personal else [protocol.BROADCAST]

    # -- lifecycle ---------------------------------------------------------------------------

    async def serve(self, runtime: Runtime, send: Any, receive: Any) -> None:
        """Run the stream until the client goes away or the server ends it."""
        admission = self.admission
        await send({"type": "http.response.start", "status": 200, "headers": _stream_headers(admission.origin)})
        self.open(runtime, send, admission.user_agent)
        self.channels.update(self.opening)
        runtime.registry.channels_changed(self)
        gone = asyncio.create_task(self._wait_disconnect(receive))
        self.log_connect()
        self.announce_connected()
        try:
            retry = f"retry: {settings.REALTIME.sse_retry_timeout}\n".encode()
            self.push(retry + sse_event("connected", protocol.encode(self._greeting())))
            await self._open_channels()
            await asyncio.wait([self.writer, gone], return_when=asyncio.FIRST_COMPLETED)
        except Exception:
            logger.exception("stream %s failed to open", self.connection_id)
            self.close(CloseCode.TRY_AGAIN_LATER, "message bus unavailable")
            await asyncio.wait([self.writer, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.release()
            gone.cancel()

    def _greeting(self) -> dict[str, Any]:
        greeting = protocol.connected(
            connection_id=self.connection_id,
            user_id=self.identity.user_id,
            heartbeat_interval=settings.REALTIME.sse_heartbeat_interval,
        )
        greeting["data"]["channels"] = [*self.opening, *self.implicit_channels]
        protocol.add_server_side(greeting, [], self.refused, self.info)
        return greeting

    async def _wait_disconnect(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    def close(self, code: int, reason: str) -> None:
        """End the stream with a `stream-error` saying why (never blocks)."""
        if self.closing:
            return
        self.closing = True
        self.close_code = int(code)
        condition = CONDITIONS.get(code, "closed")
        self._final = sse_event("stream-error", protocol.encode({"condition": condition, "text": reason}))
        self.outbox.close()

    async def finish(self, send: Any) -> None:
        await send({"type": "http.response.body", "body": self._final, "more_body": False})

    # -- events out (the transport hooks of ClientConnection) --------------------------------

    def wire(self, items: list[bytes]) -> bytes:
        return http_chunk(b"".join(items))

    async def send_items(self, send: Any, items: list[bytes]) -> None:
        await send({"type": "http.response.body", "body": b"".join(items), "more_body": True})
        # daphne has sent the headers with that first chunk: from now on, write chunks directly
        self.direct = DirectWriter.for_http_stream(self.asgi_send)

    def push_live(self, message: dict[str, Any]) -> None:
        if message["offset"] is None and self.direct is not None:
            self.push(publish_frame(message), publish_chunk(message))
        else:
            self.push(self.encode_live(message))

    def encode_live(self, message: dict[str, Any]) -> bytes:
        """The event of a live message; a persisted one advances the stream's position."""
        if message["offset"] is None:
            return publish_frame(message)
        self.positions[message["channel"]] = message["offset"]
        if message.get("epoch"):
            self.epochs[message["channel"]] = message["epoch"]
        return b"id: " + event_id(self.positions, self.epochs).encode() + b"\n" + publish_frame(message)

    def encode_replayed(self, envelope: dict[str, Any]) -> bytes:
        self.positions[envelope["channel"]] = envelope["offset"]
        return sse_event(envelope["type"], protocol.encode(envelope), event_id(self.positions, self.epochs))

    def send_reset(self, channel: str, epoch: str) -> None:
        self.positions[channel] = 0
        self.epochs[channel] = epoch
        reset = protocol.encode({"channels": [channel]})
        self.push(sse_event(protocol.RESET_EVENT, reset, event_id(self.positions, self.epochs)))

    def heartbeat(self, now: float) -> None:
        self.touch(now)
        global _heartbeat_event
        text = heartbeat_text(now)
        if _heartbeat_event[0] is not text:
            _heartbeat_event = (text, sse_event("heartbeat", text))
        self.push(_heartbeat_event[1])

    # -- opening: join, replay, go live --------------------------------------------------------

    async def _open_channels(self) -> None:
        await self.join_implicit()
        for channel in self.opening:
            since, epoch = self.admission.positions.get(channel, (None, None))
            await self._open_channel(channel, since, epoch)
        opened = {"channels": self.opening, "offsets": self.positions, "epochs": self.epochs}
        position = event_id(self.positions, self.epochs) if self.positions else None
        await self.outbox.put_paced(sse_event("stream-open", protocol.encode(opened), position))

    async def _open_channel(self, channel: str, since: int | None, epoch: str | None) -> None:
        """Join a channel, then replay what the client missed (or the retained history)."""

        async def announce(recovery: Recovery) -> int | None:
            if recovery.epoch:
                self.epochs[channel] = recovery.epoch
            if since is not None and not recovery.recovered:
                self.positions[channel] = recovery.offset
                reset = protocol.encode({"channels": [channel]})
                await self.outbox.put_paced(sse_event("stream-reset", reset, event_id(self.positions, self.epochs)))
                return None
            self.positions[channel] = recovery.offset if since is None else since
            return self.positions[channel]

        join = partial(self.runtime.hub.join, channel, self)
        await self.replay_then_live(channel, since, announce, join=join, epoch=epoch)
        self.announce_presence(channel, "join")
