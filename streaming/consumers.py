"""The WebSocket endpoint `/ws/connect` (README, "WebSocket protocol").

The consumer is thin: it admits or refuses the connection, parses frames, dispatches each action
to its `action_<name>` handler and turns typed errors into error replies. What it shares with the
SSE endpoint (outbox, writer, replay hand-off, expiry, release) is `lifecycle.ClientConnection`;
here is only what is WebSocket: frames, replies and close codes. A connection has no
channel-layer channel of its own: the hub does the bus I/O for the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.conf import settings
from django.db import InterfaceError, OperationalError

from streaming import hooks, live, protocol, security, selectors, services
from streaming.auth import (
    ACCESS_TOKEN_SUBPROTOCOL,
    ANONYMOUS,
    Identity,
    authenticator,
    authorize_message_type,
    authorize_publish,
    subscribe_refusal,
)
from streaming.daphne_adapter.io import DirectWriter, close_websocket, watch_messages, ws_text_frame
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
from streaming.history import Recovery, history_read
from streaming.lifecycle import ClientConnection, admission_refusal, count_refusal, heartbeat_text
from streaming.namespaces import options
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


_heartbeat_frame: tuple[str | None, bytes] = (None, b"")  # the last heartbeat text, as a frame
PONG_FRAMES = frozenset({'{"action":"pong"}', '{"action": "pong"}'})
PONG_PAYLOADS = frozenset(frame.encode() for frame in PONG_FRAMES)

# What a refused handshake is closed with, by the error that refused it.
REFUSAL_CODES = {
    "forbidden": CloseCode.FORBIDDEN,
    "unauthenticated": CloseCode.UNAUTHENTICATED,
    "unavailable": CloseCode.TRY_AGAIN_LATER,
    "rate_limited": CloseCode.SLOW_CONSUMER,
}


class StreamConsumer(ClientConnection, AsyncConsumer):
    """One WebSocket connection: admission, frames in, envelopes out."""

    transport = "ws"

    # -- ASGI plumbing -----------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Called per connection; unlike AsyncConsumer it opens no channel-layer channel."""
        self.scope = scope
        self.base_send = send
        self.accepted = False
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
            if self.accepted:
                self.accepted = False
                self.release()

    async def dispatch(self, message: dict) -> None:
        """Called per ASGI event; skips AsyncConsumer's per-event close_old_connections hop."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is not None:
            await handler(message)

    # -- connection lifecycle ----------------------------------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        """Called on the handshake: admit (greeting) or accept-and-close with the reason."""
        runtime = await start_runtime()
        headers = security.scope_headers(self.scope)
        identity: Identity = self.scope.get("identity", ANONYMOUS)
        ip = security.scope_client_ip(self.scope, headers)
        credentials = self.scope.get("credentials")
        self.subprotocol = ACCESS_TOKEN_SUBPROTOCOL if credentials and credentials.via_subprotocol else None
        refused = admission_refusal(runtime, "ws", identity, ip, headers.get("origin"), self.scope.get("auth_error"))
        self.prepare(identity, ip)
        wanted: list[str] = []
        if refused is None:
            try:
                wanted = await self.decide_connect()
            except StreamingError as error:
                refused = error
        if refused is not None:
            await self._refuse(refused, ip)
            raise StopConsumer
        await self.base_send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        self.accepted = True
        config = settings.REALTIME
        self.idle_timeout = config.websocket_disconnect_timeout
        self.open(runtime, self.base_send, headers.get("user-agent", ""))
        # One rate budget per client (user, else address), shared by its connections of this process.
        self._client_key = f"user:{identity.user_id}" if identity.user_id else f"ip:{ip or self.connection_id}"
        self.bucket = runtime.registry.clients.bucket(
            self._client_key, config.client_rate_limit, config.client_rate_burst
        )
        watch_messages(self.base_send, self._message_arrived)
        try:
            await self.join_implicit()
        except Exception:
            logger.exception("bus unavailable while connecting %s", self.connection_id)
            self.close(CloseCode.TRY_AGAIN_LATER, "message bus unavailable")
            return
        server_side, refused_channels = await self.authorize_server_side(wanted, 0) if wanted else ([], {})
        for channel in server_side:
            try:
                await self._join(channel)
            except Unavailable as error:
                refused_channels[channel] = error.detail
        greeting = protocol.connected(
            connection_id=self.connection_id,
            user_id=identity.user_id,
            heartbeat_interval=config.websocket_heartbeat_interval,
        )
        protocol.add_server_side(greeting, sorted(self.channels), refused_channels, self.info)
        self.send_frame(greeting)
        self.log_connect()
        self.announce_connected()
        for channel in sorted(self.channels):
            self.announce_presence(channel, "join")

    async def _refuse(self, error: StreamingError, ip: str | None) -> None:
        # Accept first: a close before accept becomes HTTP 403 and the browser never sees why.
        await self.base_send({"type": "websocket.accept", "subprotocol": self.subprotocol})
        code = REFUSAL_CODES.get(error.code, CloseCode.FORBIDDEN)
        await close_websocket(self.base_send, code, error.detail)
        count_refusal("ws", error)
        logger.info("refuse transport=ws ip=%s code=%s reason=%s", ip, int(code), error.detail)

    async def websocket_disconnect(self, message: dict) -> None:
        """Called when the socket is closed, by either side."""
        if self.close_code is None:
            self.close_code = message.get("code", CloseCode.NORMAL)
        raise StopConsumer

    def release(self) -> None:
        """Leave every channel and the registry, and give back the client's rate budget."""
        watch_messages(self.base_send, None)
        super().release()
        self.runtime.registry.clients.release(self._client_key)

    def close(self, code: int, reason: str) -> None:
        """Close soon with a code and reason (never blocks; safe to call repeatedly)."""
        if self.closing or not self.accepted:
            return
        self.closing = True
        self.close_code = int(code)
        self.outbox.close()
        self._close_task = asyncio.ensure_future(close_websocket(self.base_send, code, reason))

    # -- frames out (the transport hooks of ClientConnection) ---------------------------------

    def start_writing(self) -> None:
        self.direct = DirectWriter.for_websocket(self.base_send)

    def wire(self, items: list[str]) -> bytes:
        return b"".join([ws_text_frame(text.encode()) for text in items])

    async def send_items(self, send: Any, items: list[str]) -> None:
        for text in items:
            await send({"type": "websocket.send", "text": text})

    def push_live(self, message: dict[str, Any]) -> None:
        if self.direct is None:
            self.push(message["text"])
        else:
            self.push(message["text"], message.get("ws") or publish_ws_frame(message))

    def encode_live(self, message: dict[str, Any]) -> str:
        return message["text"]

    def encode_replayed(self, envelope: dict[str, Any]) -> str:
        return protocol.encode(envelope)

    def heartbeat(self, now: float) -> None:
        text = heartbeat_text(now)
        global _heartbeat_frame
        if _heartbeat_frame[0] is not text:
            _heartbeat_frame = (text, ws_text_frame(text.encode()))
        self.push(text, _heartbeat_frame[1])

    def send_reset(self, channel: str, epoch: str) -> None:
        self.send_frame(protocol.reply(protocol.RESET_EVENT, {"channel": channel, "epoch": epoch, "offset": 0}))

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.push(protocol.encode(frame))

    @property
    def sender(self) -> dict[str, Any]:
        return protocol.sender(self.identity.user_id, self.connection_id)

    # -- frames in ---------------------------------------------------------------------------

    def _message_arrived(self, payload: bytes, binary: bool) -> bool:
        """Under daphne, each client message as it arrives, before the application queue: life
        now, even while an action is still awaited; a heartbeat answer within the rate limit ends
        here (True). Everything else goes on to `websocket_receive`."""
        self.touch(time.time())
        return not binary and payload in PONG_PAYLOADS and self.bucket.take()

    async def websocket_receive(self, message: dict) -> None:
        """Called per client frame: any frame counts as life; errors become error replies.
        A frame that comes once the connection is closing is dropped (README, "WebSocket protocol")."""
        if self.closing:
            return
        self.touch(time.time())
        request_id = None
        try:
            text, allowed = self._admit_frame(message)
            if allowed and text in PONG_FRAMES:
                return  # a heartbeat answer, the commonest frame of an idle connection: nothing to parse
            if not allowed:
                request_id = protocol.request_id_of(_decode_or_none(text))
                raise RateLimited(f"More than {settings.REALTIME.client_rate_limit:g} messages/s.")
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
        limit = settings.REALTIME.websocket_max_message_size
        if len(text) > limit // 4 and len(text.encode("utf-8", "surrogatepass")) > limit:
            raise MessageTooLarge(f"Frames are limited to {limit} bytes.")
        return text, allowed

    # -- actions -----------------------------------------------------------------------------

    async def action_ping(self, data: dict, request_id: Any) -> None:
        self.send_frame(protocol.reply("pong", {"timestamp": protocol.now_iso()}, request_id))

    async def action_pong(self, data: dict, request_id: Any) -> None:
        """A heartbeat answer: receiving it already counted as life."""

    async def action_subscribe(self, data: dict, request_id: Any) -> None:
        channel, since, epoch = data["channel"], data.get("since"), data.get("epoch")
        await hooks.authorize_subscription(self, channel)
        fresh = channel not in self.channels and channel not in self.implicit_channels
        if fresh and len(self.channels) >= settings.REALTIME.max_subscriptions_per_connection:
            raise TooManySubscriptions(
                f"At most {settings.REALTIME.max_subscriptions_per_connection} channels per connection."
            )

        async def announce(recovery: Recovery) -> int:
            content = {
                "channel": channel, "offset": recovery.offset, "epoch": recovery.epoch, "recovered": recovery.recovered,
            }  # fmt: skip
            self.send_frame(protocol.reply("subscribed", content, request_id))
            if since is not None and not recovery.recovered and not recovery.messages:
                return recovery.offset  # a position of a reset history (or past it) counts for nothing
            return min(since or 0, recovery.offset)

        join = partial(self._join, channel) if fresh else None
        await self.replay_then_live(channel, since, announce, join=join, epoch=epoch)
        if fresh:
            self.announce_subscribed(channel)
            self.announce_presence(channel, "join")

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
            self.forget(channel)
            self.announce_presence(channel, "leave")
        self.send_frame(protocol.reply("unsubscribed", {"channel": channel}, request_id))

    async def action_send_to_channel(self, data: dict, request_id: Any) -> None:
        message_type = data.get("type", protocol.DEFAULT_CLIENT_TYPE)
        authorize_publish(self.identity, data["channel"])
        authorize_message_type(self.identity, message_type)
        content = await hooks.authorize_client_publish(self, data["channel"], message_type, data["content"])
        published = await services.apublish_to_channel(
            channel=data["channel"],
            content=content,
            type=message_type,
            sender=self.sender,
            persist=data.get("persist", False),
            message_id=data.get("id"),
        )
        self.send_frame(protocol.reply("ack", published.as_ack(), request_id))

    async def action_send_to_user(self, data: dict, request_id: Any) -> None:
        message_type = data.get("type", protocol.DEFAULT_CLIENT_TYPE)
        channel = protocol.user_channel(data["user_id"])
        authorize_publish(self.identity, channel)
        authorize_message_type(self.identity, message_type)
        content = await hooks.authorize_client_publish(self, channel, message_type, data["content"])
        published = await services.apublish_to_user(
            user_id=data["user_id"], content=content, type=message_type, sender=self.sender
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
        await hooks.authorize_subscription(self, channel)
        recovery = await database_sync_to_async(history_read)(
            channel, data.get("since"), data.get("limit"), data.get("epoch")
        )
        self.send_frame(protocol.reply("history", protocol.history_page(recovery), request_id))

    async def action_snapshot(self, data: dict, request_id: Any) -> None:
        channel = data["channel"]
        await hooks.authorize_subscription(self, channel)
        snapshot = await database_sync_to_async(live.channel_snapshot)(channel)
        self.send_frame(protocol.reply("snapshot", snapshot.as_dict(), request_id))

    async def action_presence(self, data: dict, request_id: Any) -> None:
        channel, counts_only = data["channel"], data.get("counts_only", False)
        await hooks.authorize_subscription(self, channel)
        if not counts_only and not options(channel).presence:
            raise Forbidden(f"Presence is off for channel {channel!r}; ask for counts_only.")
        await self.runtime.registry.flush()
        presence = await database_sync_to_async(selectors.channel_presence)(channel, counts_only)
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
            refused, grantable = subscribe_refusal(identity, channel)
            if refused is not None and grantable and hooks.configured("subscribe"):
                try:  # the application opened it without the token: it is asked again
                    await hooks.authorize_subscription(self, channel)
                    refused = None
                except Forbidden as refusal:
                    refused = refusal
                except Unavailable:
                    refused = None  # no answer is not a no: the channel stays
            if refused is not None:  # the new token no longer grants it
                self.forget(channel)
                self.announce_presence(channel, "leave")
                self.send_frame(protocol.reply("unsubscribed", {"channel": channel, "reason": refused.detail}))


def _decode_or_none(text: str) -> Any:
    try:
        return protocol.decode(text)
    except InvalidJSON:
        return None
