"""The WebSocket endpoint `/ws/connect` (SPEC §5).

The consumer is thin: it admits or refuses the connection, parses frames, dispatches each action
to its `action_<name>` handler and turns typed errors into error replies. Publishing goes through
`services`, delivery comes from the process hub, and every frame out passes the bounded outbox.
A connection has no channel-layer channel of its own: the hub does the bus I/O for the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.db import InterfaceError, OperationalError

from streaming import metrics, protocol, security, selectors, services
from streaming.auth import (
    ACCESS_TOKEN_SUBPROTOCOL,
    ANONYMOUS,
    Identity,
    authenticator,
    authorize_message_type,
    authorize_publish,
    authorize_subscribe,
)
from streaming.daphne_adapter.io import DirectWriter, close_websocket, unwrap_send, write_buffer_probe, ws_text_frame
from streaming.errors import (
    DatabaseUnavailable,
    Forbidden,
    InvalidJSON,
    InvalidMessage,
    MessageTooLarge,
    RateLimited,
    StreamingError,
    TooManySubscriptions,
    Unavailable,
)
from streaming.history import history_read
from streaming.outbox import HIGH_WATER, Outbox, OutboxFull, wait_for_drain
from streaming.protocol import CloseCode
from streaming.runtime import start_runtime
from streaming.signals import client_message

logger = logging.getLogger(__name__)


def publish_ws_frame(message: dict[str, Any]) -> bytes:
    """The WebSocket frame of a bus message; built once per publish and cached in the message."""
    frame = message.get("ws")
    if frame is None:
        frame = message["ws"] = ws_text_frame(message["text"].encode())
    return frame


class StreamConsumer(AsyncConsumer):
    """One WebSocket connection: admission, frames in, envelopes out."""

    transport = "ws"
    direct: DirectWriter | None = None  # set by the writer task under daphne

    # -- ASGI plumbing -----------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Called per connection; unlike AsyncConsumer it opens no channel-layer channel."""
        self.scope = scope
        self.base_send = send
        self.accepted = False
        self.closing = False
        self.close_code: int | None = None
        try:
            while True:  # one source of events: no task per event as in await_many_dispatch
                await self.dispatch(await receive())
                if self.accepted and self.outbox:
                    # Replies are queued: let the writer send them before the next frame of a
                    # burst (receive() does not yield when frames are waiting).
                    await asyncio.sleep(0)
        except StopConsumer:
            pass
        finally:
            self._release()

    async def dispatch(self, message: dict) -> None:
        """Called per ASGI event; skips AsyncConsumer's per-event close_old_connections hop."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is not None:
            await handler(message)

    # -- connection lifecycle ----------------------------------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        """Called on the handshake: admit (greeting) or accept-and-close with the reason."""
        self.runtime = await start_runtime()
        config = self.runtime.config
        headers = security.scope_headers(self.scope)
        self.connection_id = str(uuid.uuid4())
        self.identity: Identity = self.scope.get("identity", ANONYMOUS)
        self.ip = security.scope_client_ip(self.scope, headers)
        self.user_agent = headers.get("user-agent", "")
        credentials = self.scope.get("credentials")
        self.subprotocol = ACCESS_TOKEN_SUBPROTOCOL if credentials and credentials.via_subprotocol else None
        refusal = self._refusal(config, headers)
        if refusal is not None:
            await self._refuse(*refusal)
            raise StopConsumer
        await self.base_send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        self._open(config)
        try:
            for channel in self.implicit_channels:
                await self.runtime.hub.join(channel, self)
        except Exception:
            logger.exception("bus unavailable while connecting %s", self.connection_id)
            self.close(CloseCode.TRY_AGAIN_LATER, "message bus unavailable")
            return
        self.send_frame(
            protocol.connected(
                connection_id=self.connection_id,
                user_id=self.identity.user_id,
                heartbeat_interval=config.websocket_heartbeat_interval,
            )
        )
        logger.info(
            "connect id=%s transport=ws ip=%s user=%s auth=%s",
            self.connection_id, self.ip, self.identity.user_id or "-", self.identity.kind,
        )  # fmt: skip

    def _refusal(self, config: Any, headers: dict[str, str]) -> tuple[int, str] | None:
        reason = security.refusal(self.ip, headers.get("origin"))
        if reason is not None:
            return CloseCode.FORBIDDEN, reason
        if self.scope.get("auth_error"):
            return CloseCode.UNAUTHENTICATED, self.scope["auth_error"]
        if config.websocket_auth_required and not self.identity.is_authenticated:
            return CloseCode.UNAUTHENTICATED, "authentication required"
        if self.runtime.registry.count("ws") >= config.websocket_max_connections:
            return CloseCode.TRY_AGAIN_LATER, "max connections reached"
        crowded = self.runtime.registry.refusal(self.identity, self.ip)
        if crowded is not None:
            return CloseCode.SLOW_CONSUMER, crowded
        return None

    async def _refuse(self, code: int, reason: str) -> None:
        # Accept first: a close before accept becomes HTTP 403 and the browser never sees why.
        await self.base_send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        await close_websocket(self.base_send, code, reason)
        if code == CloseCode.UNAUTHENTICATED:
            metrics.AUTH_FAILURES.labels("ws").inc()
        logger.info("refuse transport=ws ip=%s code=%s reason=%s", self.ip, int(code), reason)

    def _open(self, config: Any) -> None:
        now = time.time()
        self.accepted = True
        self.connected_at = self.last_seen = now
        self.next_heartbeat = now + config.websocket_heartbeat_interval
        self.channels: set[str] = set()
        self.implicit_channels = [protocol.BROADCAST]
        if self.identity.personal_channel:
            self.implicit_channels.append(self.identity.personal_channel)
        self.outbox = Outbox(config.websocket_message_queue_size)
        # One bucket per client (user, else address), shared by all its connections of this process.
        self._client_key = (
            f"user:{self.identity.user_id}" if self.identity.user_id else f"ip:{self.ip or self.connection_id}"
        )
        self.bucket = self.runtime.registry.clients.bucket(
            self._client_key, config.client_rate_limit, config.client_rate_burst
        )
        self._replaying: dict[str, list[tuple[int | None, str]]] = {}
        self._floors: dict[str, int] = {}
        self.runtime.registry.register(self)
        self.writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.connection_id}")

    async def websocket_disconnect(self, message: dict) -> None:
        """Called when the socket is closed, by either side."""
        if self.close_code is None:
            self.close_code = message.get("code", CloseCode.NORMAL)
        raise StopConsumer

    def _release(self) -> None:
        """Leave every channel and the registry; runs once, synchronously, on the way out."""
        if not self.accepted:
            return
        self.accepted = False
        self.closing = True
        hub = self.runtime.hub
        for channel in (*self.implicit_channels, *self.channels):
            hub.leave(channel, self)
        self.runtime.registry.unregister(self, int(self.close_code or CloseCode.NORMAL))
        self.runtime.registry.clients.release(self._client_key)
        self.writer.cancel()
        for channel in self.channels:
            self._announce_presence(channel, "leave")
        logger.info(
            "disconnect id=%s transport=ws ip=%s user=%s code=%s",
            self.connection_id, self.ip, self.identity.user_id or "-", self.close_code,
        )  # fmt: skip

    def close(self, code: int, reason: str) -> None:
        """Close soon with a code and reason (never blocks; safe to call repeatedly)."""
        if self.closing or not self.accepted:
            return
        self.closing = True
        self.close_code = int(code)
        self.outbox.close()
        self._close_task = asyncio.ensure_future(close_websocket(self.base_send, code, reason))

    # -- frames out --------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """The connection's writer: drains the outbox into the socket, pausing on backpressure."""
        probe = write_buffer_probe(self.base_send)
        send = unwrap_send(self.base_send)  # we never modify the session: skip its per-frame checks
        self.direct = DirectWriter.for_websocket(self.base_send)
        while True:
            frames = await self.outbox.take()
            if not frames:
                return  # closed
            if self.direct is not None:  # daphne: one write of ready frames for the whole batch
                self.direct.write(b"".join([ws_text_frame(text.encode()) for text in frames]))
            else:
                for text in frames:
                    await send({"type": "websocket.send", "text": text})
            if probe is not None and probe() > HIGH_WATER:
                await wait_for_drain(probe)

    def push(self, text: str, frame: bytes | None = None) -> None:
        """Send an encoded frame, or queue it; a full outbox closes the connection as a slow consumer.

        Under daphne, with nothing queued and the socket keeping up, the frame is written at once:
        no writer-task wake-up per message (measured: bench/RESULTS.md). `frame` is the ready
        WebSocket frame of `text` when the caller has it (shared by all subscribers of a publish).
        """
        if self.closing:
            return
        direct = self.direct
        if direct is not None and not self.outbox and direct.buffered() <= HIGH_WATER:
            direct.write(frame or ws_text_frame(text.encode()))
            return
        try:
            self.outbox.put(text)
        except OutboxFull:
            logger.warning("slow consumer id=%s: outbound queue full", self.connection_id)
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full")

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.push(protocol.encode(frame))

    def deliver(self, message: dict[str, Any]) -> None:
        """Called by the hub for each bus message of a joined channel."""
        channel, offset = message["channel"], message["offset"]
        if self._replaying:
            buffered = self._replaying.get(channel)
            if buffered is not None:
                if len(buffered) >= self.outbox.limit + self.runtime.config.channel_history_size:
                    self.close(CloseCode.SLOW_CONSUMER, "slow consumer: fell behind during history replay")
                buffered.append((offset, message["text"]))
                return
        if offset is not None and offset <= self._floors.get(channel, 0):
            return  # already delivered from history
        if self.direct is None:
            self.push(message["text"])
        else:
            self.push(message["text"], publish_ws_frame(message))

    def tick(self, now: float) -> None:
        """Called by the registry about once a second."""
        if self.closing:
            return
        config = self.runtime.config
        if self.identity.expires_at is not None and now >= self.identity.expires_at:
            self.close(CloseCode.UNAUTHENTICATED, "token expired")
        elif config.websocket_disconnect_timeout and now - self.last_seen > config.websocket_disconnect_timeout:
            self.close(CloseCode.IDLE, "idle timeout")
        elif now >= self.next_heartbeat:
            self.next_heartbeat = now + config.websocket_heartbeat_interval
            self.send_frame(protocol.heartbeat())

    @property
    def sender(self) -> dict[str, Any]:
        return protocol.sender(self.identity.user_id, self.connection_id)

    # -- frames in ---------------------------------------------------------------------------

    async def websocket_receive(self, message: dict) -> None:
        """Called per client frame: any frame counts as life; errors become error replies."""
        self.last_seen = time.time()
        request_id = None
        try:
            text, allowed = self._admit_frame(message)
            if not allowed:
                request_id = protocol.request_id_of(_decode_or_none(text))
                raise RateLimited(f"More than {self.runtime.config.client_rate_limit:g} messages/s.")
            payload = protocol.decode(text)
            request_id = protocol.request_id_of(payload)
            frame = protocol.parse_frame(payload)
            await getattr(self, "action_" + frame.action)(frame.data, frame.request_id)
        except StreamingError as error:
            self.send_frame(protocol.error_reply(error.code, error.detail, request_id, error.fields))
        except (OperationalError, InterfaceError) as error:
            logger.warning("database unavailable on connection %s: %s", self.connection_id, error)
            refused = DatabaseUnavailable()
            self.send_frame(protocol.error_reply(refused.code, refused.detail, request_id))
        except Exception:
            logger.exception("action failed on connection %s", self.connection_id)
            self.send_frame(protocol.error_reply("internal_error", "Internal error.", request_id))

    def _admit_frame(self, message: dict) -> tuple[str, bool]:
        """Count the frame against the rate limit and check its size before any parsing.

        Returns the text and whether the rate limit allows it; a refused frame is still parsed
        (bounded by the size limit) so that its error reply can carry its request_id.
        """
        allowed = self.bucket.take()
        if not allowed and self.bucket.abusive():
            self.close(CloseCode.SLOW_CONSUMER, "rate limit exceeded")
        text = message.get("text")
        if text is None:
            raise (
                RateLimited() if not allowed else InvalidMessage("Binary frames are not supported; send JSON as text.")
            )
        limit = self.runtime.config.websocket_max_message_size
        if len(text) > limit // 4 and len(text.encode("utf-8", "surrogatepass")) > limit:
            raise MessageTooLarge(f"Frames are limited to {limit} bytes.")
        return text, allowed

    # -- actions -----------------------------------------------------------------------------

    async def action_ping(self, data: dict, request_id: Any) -> None:
        self.send_frame(protocol.reply("pong", {"timestamp": protocol.now_iso()}, request_id))

    async def action_pong(self, data: dict, request_id: Any) -> None:
        """A heartbeat answer: receiving it already counted as life."""

    async def action_subscribe(self, data: dict, request_id: Any) -> None:
        channel, since = data["channel"], data.get("since")
        authorize_subscribe(self.identity, channel)
        fresh = channel not in self.channels and channel not in self.implicit_channels
        if fresh and len(self.channels) >= self.runtime.config.max_subscriptions_per_connection:
            raise TooManySubscriptions(
                f"At most {self.runtime.config.max_subscriptions_per_connection} channels per connection."
            )
        replay = self._replaying[channel] = []
        try:
            if fresh:
                await self._join(channel)
            recovery = await self.runtime.hub.history_read(channel, since)
            self.send_frame(
                protocol.reply(
                    "subscribed",
                    {"channel": channel, "offset": recovery.offset, "recovered": recovery.recovered},
                    request_id,
                )
            )
            replayed = known = min(since or 0, recovery.offset)
            while True:  # page by page: a page is bounded in bytes
                for envelope in recovery.messages:
                    await self.outbox.put_paced(protocol.encode(envelope))
                    replayed = envelope["offset"]
                if since is None or not (recovery.has_more and recovery.messages):
                    break
                recovery = await self.runtime.hub.history_read(channel, replayed)
            # Everything up to the floor was replayed or is known to the client; a `since` beyond
            # the head (a history that was reset) counts for nothing: live messages start at the head.
            floor = max(replayed, known)
            self._floors[channel] = floor
            # Live messages that came during the replay follow it; the channel stays in replay
            # until none is left, so later ones cannot overtake them.
            while replay:
                batch, replay[:] = replay[:], []
                for offset, text in batch:
                    if offset is None or offset > floor:
                        await self.outbox.put_paced(text)
        finally:
            self._replaying.pop(channel, None)
        if fresh:
            self._announce_presence(channel, "join")

    async def _join(self, channel: str) -> None:
        try:
            await self.runtime.hub.join(channel, self)
        except Exception as error:
            self.runtime.hub.leave(channel, self)
            raise Unavailable() from error
        self.channels.add(channel)
        self.runtime.registry.channels_changed(self)

    async def action_unsubscribe(self, data: dict, request_id: Any) -> None:
        channel = data["channel"]
        if channel in self.implicit_channels:
            raise Forbidden("The broadcast and personal channels cannot be left.")
        if channel in self.channels:
            self._leave(channel)
        self.send_frame(protocol.reply("unsubscribed", {"channel": channel}, request_id))

    async def action_send_to_channel(self, data: dict, request_id: Any) -> None:
        message_type = data.get("type", protocol.DEFAULT_CLIENT_TYPE)
        authorize_publish(self.identity, data["channel"])
        authorize_message_type(self.identity, message_type)
        published = await services.apublish_to_channel(
            channel=data["channel"],
            content=data["content"],
            type=message_type,
            sender=self.sender,
            persist=data.get("persist", False),
        )
        self.send_frame(protocol.reply("ack", published.as_ack(), request_id))

    async def action_send_to_user(self, data: dict, request_id: Any) -> None:
        message_type = data.get("type", protocol.DEFAULT_CLIENT_TYPE)
        authorize_publish(self.identity, protocol.user_channel(data["user_id"]))
        authorize_message_type(self.identity, message_type)
        published = await services.apublish_to_user(
            user_id=data["user_id"], content=data["content"], type=message_type, sender=self.sender
        )
        self.send_frame(protocol.reply("ack", published.as_ack(), request_id))

    async def action_message(self, data: dict, request_id: Any) -> None:
        """Echo to the sender's own connections (all of a user's), then fire `client_message`."""
        if self.identity.user_id is not None:
            published = await services.apublish_to_user(
                user_id=self.identity.user_id, content=data["content"], sender=self.sender
            )
            envelope_id = published.id
        else:
            envelope = protocol.envelope(
                type=protocol.DEFAULT_SERVER_TYPE, channel=None, content=data["content"], sender=self.sender
            )
            envelope_id = envelope["id"]
            self.send_frame(envelope)
        self.send_frame(protocol.reply("ack", {"id": envelope_id}, request_id))
        results = await client_message.asend_robust(
            sender=type(self),
            connection_id=self.connection_id,
            identity=self.identity,
            content=data["content"],
            envelope_id=envelope_id,
        )
        for receiver, result in results:
            if isinstance(result, Exception):
                logger.error("client_message receiver %r failed: %r", receiver, result)

    async def action_history(self, data: dict, request_id: Any) -> None:
        channel = data["channel"]
        authorize_subscribe(self.identity, channel)
        recovery = await database_sync_to_async(history_read)(channel, data.get("since"), data.get("limit"))
        content = {
            "channel": channel,
            "offset": recovery.offset,
            "messages": recovery.messages,
            "recovered": recovery.recovered,
            "has_more": recovery.has_more,
        }
        self.send_frame(protocol.reply("history", content, request_id))

    async def action_presence(self, data: dict, request_id: Any) -> None:
        channel = data["channel"]
        authorize_subscribe(self.identity, channel)
        await self.runtime.registry.flush()
        presence = await database_sync_to_async(selectors.channel_presence)(channel)
        self.send_frame(protocol.reply("presence", presence, request_id))

    async def action_refresh(self, data: dict, request_id: Any) -> None:
        """Replace the connection's token with a fresh one for the same user."""
        if self.identity.kind != "jwt":
            raise Forbidden("Only connections authenticated with a token can refresh it.")
        identity = authenticator.verify_token(data["token"])
        if identity.user_id != self.identity.user_id:
            raise Forbidden("The new token is for another user.")
        self.identity = identity
        self.send_frame(protocol.reply("refreshed", {"expires_at": identity.expires_at}, request_id))
        for channel in sorted(self.channels):
            try:
                authorize_subscribe(identity, channel)
            except Forbidden as refused:  # the new token no longer grants it
                self._leave(channel)
                self.send_frame(protocol.reply("unsubscribed", {"channel": channel, "reason": refused.detail}))

    def _leave(self, channel: str) -> None:
        self.channels.discard(channel)
        self._floors.pop(channel, None)
        self.runtime.hub.leave(channel, self)
        self.runtime.registry.channels_changed(self)
        self._announce_presence(channel, "leave")

    # -- presence ----------------------------------------------------------------------------

    def _announce_presence(self, channel: str, event: str) -> None:
        if not protocol.is_presence_channel(channel):
            return
        content = protocol.presence_content(
            event=event, user_id=self.identity.user_id, connection_id=self.connection_id
        )
        task = asyncio.ensure_future(
            services.apublish_to_channel(channel=channel, content=content, type=protocol.PRESENCE)
        )
        task.add_done_callback(_log_failure)


def _decode_or_none(text: str) -> Any:
    try:
        return protocol.decode(text)
    except InvalidJSON:
        return None


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("presence announcement failed: %r", task.exception())
