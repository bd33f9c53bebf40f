"""The Server-Sent Events endpoint `GET /sse/connect` (SPEC §6).

An ASGI app rather than a Django view, so that refusals are real HTTP statuses before any stream
and the stream gets the same bounded outbox and daphne backpressure as a WebSocket. Each stream
is a hub subscriber of its channels; a publish is encoded as an SSE frame once per process and
shared by every local stream. django-eventstream supplies the wire details: its SSE encoding,
its `Last-Event-ID` format (`channel:offset,…`) and the `stream-reset` / `stream-error` events;
`streaming.eventstream` plugs our history into its storage interface.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from django_eventstream.utils import make_id, parse_last_event_id, sse_encode_event

from streaming import metrics, protocol, security
from streaming.auth import ANONYMOUS, Identity, authorize_subscribe
from streaming.daphne_adapter.io import DirectWriter, http_chunk, unwrap_send, write_buffer_probe
from streaming.errors import (
    Forbidden,
    InvalidMessage,
    RateLimited,
    StreamingError,
    TooManySubscriptions,
    Unauthenticated,
    Unavailable,
)
from streaming.outbox import HIGH_WATER, Outbox, OutboxFull, wait_for_drain
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
    positions: dict[str, int] = field(default_factory=dict)


def _requested_channels(query: dict[str, list[str]]) -> list[str]:
    names: list[str] = []
    for value in query.get("channels", []):
        names.extend(item.strip() for item in value.split(",") if item.strip())
    names.extend(item for item in query.get("channel", []) if item)
    return list(dict.fromkeys(protocol.validate_channel(name) for name in names))


def _positions(raw: str | None, channels: list[str]) -> dict[str, int]:
    """Parse a Last-Event-ID (`channel:offset,…`) into offsets of the requested channels."""
    if not raw or raw == "error":
        return {}
    try:
        parsed = {unquote(channel): int(offset) for channel, offset in parse_last_event_id(raw).items()}
    except (ValueError, TypeError):
        raise InvalidMessage("Last-Event-ID is not a position of this server (channel:offset,…).") from None
    return {channel: offset for channel, offset in parsed.items() if channel in channels and offset >= 0}


def admit(scope: dict[str, Any], runtime: Runtime) -> Admission:
    """Check a stream request in the order of SPEC §6; raise the StreamingError that refuses it."""
    config = runtime.config
    headers = security.scope_headers(scope)
    ip = security.scope_client_ip(scope, headers)
    origin = headers.get("origin")
    reason = security.refusal(ip, origin)
    if reason is not None:
        raise Forbidden(reason[0].upper() + reason[1:] + ".")
    if scope.get("auth_error"):
        raise Unauthenticated(scope["auth_error"])
    identity: Identity = scope.get("identity", ANONYMOUS)
    if config.sse_auth_required and not identity.is_authenticated:
        raise Unauthenticated("Authentication required.")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    channels = _requested_channels(query)
    if len(channels) > config.max_subscriptions_per_connection:
        raise TooManySubscriptions(f"At most {config.max_subscriptions_per_connection} channels per stream.")
    for channel in channels:
        authorize_subscribe(identity, channel)
    last_event_id = headers.get("last-event-id") or next((v for v in reversed(query.get("lastEventId", [])) if v), None)
    positions = _positions(last_event_id, channels)
    if runtime.registry.count("sse") >= config.sse_max_connections:
        raise Unavailable("Too many SSE connections on this server; retry later.")
    crowded = runtime.registry.refusal(identity, ip)
    if crowded is not None:
        raise RateLimited(crowded[0].upper() + crowded[1:] + ".")
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
        metrics.AUTH_FAILURES.labels("sse").inc()
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
        retry_seconds = max(1, runtime.config.sse_retry_timeout // 1000)
        try:
            if scope.get("method") not in ("GET", "HEAD"):
                raise InvalidMessage("Open a stream with GET.")
            admission = admit(scope, runtime)
        except StreamingError as error:
            logger.info("refuse transport=sse status=%s reason=%s", error.status_code, error.detail)
            await _refuse(send, error, headers.get("origin"), retry_seconds)
            return
        if scope["method"] == "HEAD":  # the GET's status and headers, and no stream
            await send({"type": "http.response.start", "status": 200, "headers": _stream_headers(admission.origin)})
            await send({"type": "http.response.body", "body": b""})
            return
        await SSEListener(runtime, send, admission).serve(receive)


class SSEListener:
    """One SSE stream: a hub subscriber with a bounded outbox and a writer task."""

    transport = "sse"
    direct: DirectWriter | None = None  # set by the writer task under daphne

    def __init__(self, runtime: Runtime, send: Any, admission: Admission) -> None:
        config = runtime.config
        self.runtime, self.send, self.admission = runtime, send, admission
        self.connection_id = str(uuid.uuid4())
        self.identity = admission.identity
        self.ip, self.user_agent = admission.ip, admission.user_agent
        self.connected_at = self.last_seen = time.time()
        self.next_heartbeat = self.connected_at + config.sse_heartbeat_interval
        self.channels: set[str] = set(admission.channels)
        self.implicit_channels = [protocol.BROADCAST]
        if self.identity.personal_channel:
            self.implicit_channels.append(self.identity.personal_channel)
        self.positions: dict[str, int] = {}
        self.outbox = Outbox(config.websocket_message_queue_size)
        self.closing = False
        self.close_code: int = CloseCode.NORMAL
        self._final = b""
        self._replaying: dict[str, list[dict[str, Any]]] = {}
        self._floors: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def serve(self, receive: Any) -> None:
        """Run the stream until the client goes away or the server ends it."""
        headers = _stream_headers(self.admission.origin)
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        self.runtime.registry.register(self)
        writer = asyncio.create_task(self._write_loop())
        gone = asyncio.create_task(self._wait_disconnect(receive))
        logger.info(
            "connect id=%s transport=sse ip=%s user=%s auth=%s",
            self.connection_id, self.ip, self.identity.user_id or "-", self.identity.kind,
        )  # fmt: skip
        try:
            retry = f"retry: {self.runtime.config.sse_retry_timeout}\n".encode()
            self.push(retry + sse_event("connected", protocol.encode(self._greeting())))
            await self._open_channels()
            await asyncio.wait([writer, gone], return_when=asyncio.FIRST_COMPLETED)
        except Exception:
            logger.exception("stream %s failed to open", self.connection_id)
            self.close(CloseCode.TRY_AGAIN_LATER, "message bus unavailable")
            await asyncio.wait([writer, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._release()
            writer.cancel()
            gone.cancel()

    def _greeting(self) -> dict[str, Any]:
        greeting = protocol.connected(
            connection_id=self.connection_id,
            user_id=self.identity.user_id,
            heartbeat_interval=self.runtime.config.sse_heartbeat_interval,
        )
        greeting["data"]["channels"] = [*self.admission.channels, *self.implicit_channels]
        return greeting

    async def _wait_disconnect(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    def _release(self) -> None:
        self.closing = True
        hub = self.runtime.hub
        for channel in (*self.implicit_channels, *self.channels):
            hub.leave(channel, self)
        self.runtime.registry.unregister(self, int(self.close_code))
        logger.info(
            "disconnect id=%s transport=sse ip=%s user=%s code=%s",
            self.connection_id, self.ip, self.identity.user_id or "-", int(self.close_code),
        )  # fmt: skip

    def close(self, code: int, reason: str) -> None:
        """End the stream with a `stream-error` saying why (never blocks)."""
        if self.closing:
            return
        self.closing = True
        self.close_code = int(code)
        condition = CONDITIONS.get(code, "closed")
        self._final = sse_event("stream-error", protocol.encode({"condition": condition, "text": reason}))
        self.outbox.close()

    def tick(self, now: float) -> None:
        """Called by the registry about once a second: heartbeats and token expiry."""
        if self.closing:
            return
        if self.identity.expires_at is not None and now >= self.identity.expires_at:
            self.close(CloseCode.UNAUTHENTICATED, "token expired")
        elif now >= self.next_heartbeat:
            self.next_heartbeat = now + self.runtime.config.sse_heartbeat_interval
            self.last_seen = now
            self.push(sse_event("heartbeat", protocol.encode(protocol.heartbeat())))

    # -- frames out --------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        probe = write_buffer_probe(self.send)
        send = unwrap_send(self.send)  # body chunks need nothing from the session middleware
        while True:
            frames = await self.outbox.take()
            if not frames:
                break  # closed and drained
            if self.direct is not None:
                self.direct.write(http_chunk(b"".join(frames)))
            else:
                await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})
                # daphne has sent the headers with that first chunk: from now on, write chunks directly
                self.direct = DirectWriter.for_http_stream(self.send)
            if probe is not None and probe() > HIGH_WATER:
                await wait_for_drain(probe)
        await self.send({"type": "http.response.body", "body": self._final, "more_body": False})

    def push(self, frame: bytes, chunk: bytes | None = None) -> None:
        """Send an SSE frame, or queue it; a full outbox ends the stream as a slow consumer.

        As for WebSockets (consumers.py), under daphne a frame goes straight to the socket when
        nothing is queued; `chunk` is its ready HTTP chunk when shared by a whole publish.
        """
        if self.closing:
            return
        direct = self.direct
        if direct is not None and not self.outbox and direct.buffered() <= HIGH_WATER:
            direct.write(chunk or http_chunk(frame))
            return
        try:
            self.outbox.put(frame)
        except OutboxFull:
            logger.warning("slow consumer id=%s: outbound queue full", self.connection_id)
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full; reconnect to resume")

    def deliver(self, message: dict[str, Any]) -> None:
        """Called by the hub for each bus message of a joined channel."""
        if self._replaying:
            buffered = self._replaying.get(message["channel"])
            if buffered is not None:
                if len(buffered) >= self.outbox.limit + self.runtime.config.channel_history_size:
                    self.close(CloseCode.SLOW_CONSUMER, "slow consumer: fell behind during history replay")
                buffered.append(message)
                return
        if message["offset"] is None and self.direct is not None:
            self.push(publish_frame(message), publish_chunk(message))
            return
        frame = self._frame(message)
        if frame is not None:
            self.push(frame)

    def _frame(self, message: dict[str, Any]) -> bytes | None:
        """The frame of a live message (None if already replayed); persisted ones advance the position."""
        channel, offset = message["channel"], message["offset"]
        if offset is None:
            return publish_frame(message)
        if offset <= self._floors.get(channel, 0):
            return None
        self.positions[channel] = offset
        return b"id: " + make_id(self.positions).encode() + b"\n" + publish_frame(message)

    # -- opening: join, replay, go live --------------------------------------------------------

    async def _open_channels(self) -> None:
        hub = self.runtime.hub
        for channel in self.implicit_channels:
            await hub.join(channel, self)
        for channel in self.admission.channels:
            await self._open_channel(channel, self.admission.positions.get(channel))
        opened = {"channels": self.admission.channels, "offsets": self.positions}
        event_id = make_id(self.positions) if self.positions else None
        await self.outbox.put_paced(sse_event("stream-open", protocol.encode(opened), event_id))

    async def _open_channel(self, channel: str, since: int | None) -> None:
        """Join a channel, then replay what the client missed (or the retained history)."""
        replay = self._replaying[channel] = []
        try:
            await self.runtime.hub.join(channel, self)
            recovery = await self.runtime.hub.history_read(channel, since)
            if since is not None and not recovery.recovered:
                self.positions[channel] = recovery.offset
                reset = protocol.encode({"channels": [channel]})
                await self.outbox.put_paced(sse_event("stream-reset", reset, make_id(self.positions)))
            else:
                self.positions[channel] = recovery.offset if since is None else since
                while True:  # page by page: a page is bounded in bytes
                    for envelope in recovery.messages:
                        self.positions[channel] = envelope["offset"]
                        frame = sse_event(envelope["type"], protocol.encode(envelope), make_id(self.positions))
                        await self.outbox.put_paced(frame)
                    if since is None or not (recovery.has_more and recovery.messages):
                        break
                    recovery = await self.runtime.hub.history_read(channel, self.positions[channel])
            self._floors[channel] = self.positions[channel]
            # Live messages that came during the replay follow it, before any later one.
            while replay:
                batch, replay[:] = replay[:], []
                for message in batch:
                    frame = self._frame(message)
                    if frame is not None:
                        await self.outbox.put_paced(frame)
        finally:
            self._replaying.pop(channel, None)
