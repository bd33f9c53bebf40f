"""What a WebSocket and an SSE stream share: admission, the outbox and its writer, the hand-off
from history replay to live delivery, token expiry and heartbeats, and release.

`ClientConnection` is both what the hub delivers to and what the registry holds. Each endpoint
subclasses it and keeps only what its transport does differently: how a message becomes bytes on
the wire (WebSocket frames, SSE events with positions), how the connection ends (a close code, a
`stream-error` event) and how it answers its client (replies, HTTP statuses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from django.conf import settings

from streaming import hooks, metrics, protocol, security
from streaming.auth import Identity
from streaming.daphne_adapter.io import DirectWriter, abort_connection, unwrap_send, write_buffer_probe
from streaming.errors import (
    Forbidden,
    RateLimited,
    StreamingError,
    TooManySubscriptions,
    Unauthenticated,
    Unavailable,
)
from streaming.history import Recovery
from streaming.namespaces import options
from streaming.outbox import HIGH_WATER, Outbox, OutboxFull, wait_for_drain
from streaming.protocol import CloseCode
from streaming.signals import connected, disconnected, fire, subscribed, unsubscribed

logger = logging.getLogger(__name__)


def admission_refusal(
    runtime: Any, transport: str, identity: Identity, ip: str | None, origin: str | None, auth_error: str | None
) -> StreamingError | None:
    """Why a new connection is refused, as the error each endpoint turns into a close code or an
    HTTP status (README, "Authentication and security"); None when it is admitted."""
    config = settings.REALTIME
    reason = security.refusal(ip, origin)
    if reason is not None:
        return Forbidden(reason)
    if auth_error:
        return Unauthenticated(auth_error)
    required = config.websocket_auth_required if transport == "ws" else config.sse_auth_required
    if required and not identity.is_authenticated:
        return Unauthenticated("authentication required")
    limit = config.websocket_max_connections if transport == "ws" else config.sse_max_connections
    if runtime.registry.count(transport) >= limit:
        return Unavailable("max connections reached")
    crowded = runtime.registry.refusal(identity, ip)
    if crowded is not None:
        return RateLimited(crowded)
    return None


class ClientConnection:
    """One client connection of this process; the transport-specific parts are the hooks below."""

    transport: ClassVar[str]
    direct: DirectWriter | None = None  # set by the writer under daphne: frames go straight to the socket
    closing = False
    close_code: int | None = None

    # -- hooks ---------------------------------------------------------------------------------

    def push_live(self, message: dict[str, Any]) -> None:
        """Send a bus message that passed the floors (the shared encoding of a publish when possible)."""
        raise NotImplementedError

    def encode_live(self, message: dict[str, Any]) -> Any:
        """A live message as an outbox item, for one that waited behind a history replay."""
        raise NotImplementedError

    def encode_replayed(self, envelope: dict[str, Any]) -> Any:
        """An envelope read from history as an outbox item."""
        raise NotImplementedError

    def wire(self, items: list[Any]) -> bytes:
        """Outbox items as the bytes of a direct write."""
        raise NotImplementedError

    async def send_items(self, send: Any, items: list[Any]) -> None:
        """Outbox items through the ASGI `send` (no direct writer)."""
        raise NotImplementedError

    def heartbeat(self, now: float) -> None:
        """Send a heartbeat."""
        raise NotImplementedError

    def send_reset(self, channel: str, epoch: str) -> None:
        """Tell the client the channel's history was reset: its position there is gone."""
        raise NotImplementedError

    def close(self, code: int, reason: str) -> None:
        """End the connection soon with a code and reason (never blocks; safe to call repeatedly)."""
        raise NotImplementedError

    async def finish(self, send: Any) -> None:
        """Called by the writer once the outbox is closed and drained."""

    # -- opening --------------------------------------------------------------------------------

    info: Any = None  # what the connect hook attached to the connection
    reaped = False  # a peer reaped this process while it lived: the cluster was told it ended

    def prepare(self, identity: Identity, ip: str | None) -> None:
        """Who is connecting, before any hook is asked: its id is fixed from here on."""
        self.connection_id = protocol.new_id()
        self.identity, self.ip = identity, ip

    def hook_context(self, event: str, **fields: Any) -> hooks.HookContext:
        """What a hook is told about this connection (README, "Hooks")."""
        return hooks.HookContext(
            event, self.identity, self.connection_id, self.transport, self.ip, info=self.info, **fields
        )

    async def decide_connect(self) -> list[str]:
        """Ask the connect hook (raises the refusal); returns the server-side channels asked for:
        the token's `subs` claim, then the hook's `channels` (README, "Server-side subscriptions")."""
        wanted = list(self.identity.subs)
        if hooks.configured("connect"):
            answer = await hooks.run(self.hook_context("connect"))
            if answer is not None:
                self.info = answer.info
                wanted += [str(channel) for channel in answer.channels]
        return list(dict.fromkeys(wanted))

    async def authorize_server_side(self, wanted: list[str], taken: int) -> tuple[list[str], dict[str, str]]:
        """The server-side channels this connection may join, authorized like explicit ones, and
        the reasons of those refused; `taken`: explicit channels it has already."""
        allowed: list[str] = []
        refused: dict[str, str] = {}
        limit = settings.REALTIME.max_subscriptions_per_connection
        for channel in wanted[: limit * 2]:  # a claim cannot make the server check thousands
            if channel in self.implicit_channels:
                continue
            try:
                protocol.validate_channel(channel)
                if taken + len(allowed) >= limit:
                    raise TooManySubscriptions(f"At most {limit} channels per connection.")
                await hooks.authorize_subscription(self, channel)
            except StreamingError as error:
                refused[channel[:100]] = error.detail
                continue
            allowed.append(channel)
        return allowed, refused

    def open(self, runtime: Any, send: Any, user_agent: str) -> None:
        """Start the connection's life in this process: registry row, outbox and writer."""
        config = settings.REALTIME
        now = time.time()
        self.runtime, self.asgi_send = runtime, send
        self.user_agent = user_agent
        self.connected_at = self.last_seen = now
        self.next_heartbeat = now + self.heartbeat_interval
        self.channels: set[str] = set()
        self.implicit_channels = [protocol.BROADCAST]
        if self.identity.personal_channel:
            self.implicit_channels.append(self.identity.personal_channel)
        self.outbox = Outbox(config.websocket_message_queue_size)
        self._replaying: dict[str, list[dict[str, Any]]] = {}
        self._floors: dict[str, int] = {}
        runtime.registry.register(self)
        self.writer = asyncio.create_task(self._write_loop(), name=f"{self.transport}-writer-{self.connection_id}")

    def announce_connected(self) -> None:
        """The `connected` signal, and `subscribed` for the channels it starts with."""
        self._announced = True
        fire(
            connected, self.transport, connection_id=self.connection_id, transport=self.transport,
            identity=self.identity, ip=self.ip, info=self.info, channels=sorted(self.channels),
        )  # fmt: skip
        for channel in sorted(self.channels):
            self.announce_subscribed(channel)

    def announce_subscribed(self, channel: str) -> None:
        fire(
            subscribed, self.transport, connection_id=self.connection_id, transport=self.transport,
            identity=self.identity, channel=channel,
        )  # fmt: skip

    def _announce_unsubscribed(self, channel: str) -> None:
        if self._announced and not self.reaped:
            fire(
                unsubscribed, self.transport, connection_id=self.connection_id, transport=self.transport,
                identity=self.identity, channel=channel, reaped=False,
            )  # fmt: skip

    _announced = False

    @property
    def heartbeat_interval(self) -> float:
        config = settings.REALTIME
        return config.websocket_heartbeat_interval if self.transport == "ws" else config.sse_heartbeat_interval

    async def join_implicit(self) -> None:
        """Join `broadcast` and the personal channel (no replay: they are joined at connect)."""
        for channel in self.implicit_channels:
            await self.runtime.hub.join(channel, self)

    # -- frames out -----------------------------------------------------------------------------

    def deliver(self, message: dict[str, Any]) -> None:
        """Called by the hub for each bus message of a joined channel."""
        if self._replaying:
            buffered = self._replaying.get(message["channel"])
            if buffered is not None:
                if len(buffered) >= self.outbox.limit + options(message["channel"]).history_size:
                    self.close(CloseCode.SLOW_CONSUMER, "slow consumer: fell behind during history replay")
                buffered.append(message)
                return
        offset = message["offset"]
        if offset is not None and offset <= self._floors.get(message["channel"], 0):
            return  # already delivered from history
        self.push_live(message)

    def push(self, item: Any, ready: bytes | None = None) -> None:
        """Send an outbox item, or queue it; a full outbox closes the connection as a slow consumer.

        Under daphne, with nothing queued and the socket keeping up, the bytes go to the socket at
        once: no writer wake-up per message (bench/OPTIMISATIONS.md). `ready` is the item's wire
        bytes when the caller has them (shared by all subscribers of a publish).
        """
        if self.closing:
            return
        direct = self.direct
        if direct is not None and not self.outbox.pending and direct.offer(ready or self.wire([item]), HIGH_WATER):
            return
        try:
            self.outbox.put(item)
        except OutboxFull:
            logger.warning("slow consumer id=%s: outbound queue full", self.connection_id)
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full")

    async def _write_loop(self) -> None:
        """The connection's writer: drains the outbox into the socket, pausing on backpressure."""
        probe = write_buffer_probe(self.asgi_send)
        send = unwrap_send(self.asgi_send)  # past the handshake no middleware needs to see a frame
        self.start_writing()
        while True:
            items = await self.outbox.take()
            if not items:
                break  # closed and drained
            if self.direct is not None:
                self.direct.write(self.wire(items))
            else:
                await self.send_items(send, items)
            if probe is not None and probe() > HIGH_WATER and not await self._drained(probe):
                return
        await self.finish(send)
        if probe is not None and probe() > 0:
            await self._drained(probe, low=0)  # a connection that will not take its last bytes is dropped

    def start_writing(self) -> None:
        """Called by the writer before its first write."""

    async def _drained(self, probe: Callable[[], int], low: int | None = None) -> bool:
        """Wait for the socket to take its buffer; past SLOW_CONSUMER_TIMEOUT, drop the connection."""
        timeout = settings.REALTIME.slow_consumer_timeout
        if await wait_for_drain(probe, timeout) if low is None else await wait_for_drain(probe, timeout, low):
            return True
        logger.warning("slow consumer id=%s: socket took nothing for a while; dropped", self.connection_id)
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer: the socket is not read")
        abort_connection(self.asgi_send)
        return False

    # -- history replay, then live --------------------------------------------------------------

    async def replay_then_live(
        self,
        channel: str,
        since: int | None,
        announce: Callable[[Recovery], Awaitable[int | None]],
        join: Callable[[], Awaitable[None]] | None = None,
        epoch: str | None = None,
    ) -> None:
        """Join (when `join` is given), replay what history holds after `since`, then deliver live
        messages without a gap or a duplicate: from the join on, live messages of the channel wait
        until the replay is out. `announce` sends what the transport says first and returns the
        offset the client knows up to, or None to replay nothing (a reset).
        """
        replay = self._replaying[channel] = []
        try:
            if join is not None:
                await join()
            recover = options(channel).recover  # off: positions are checked, nothing is replayed
            recovery = await self.runtime.hub.history_read(channel, since, messages=recover, epoch=epoch)
            known = await announce(recovery)
            floor = recovery.offset if known is None else known
            while known is not None:  # page by page: a page is bounded in bytes
                for envelope in recovery.messages:
                    await self.outbox.put_paced(self.encode_replayed(envelope))
                    floor = max(floor, envelope["offset"])
                if since is None or not (recover and recovery.has_more and recovery.messages):
                    break
                recovery = await self.runtime.hub.history_read(channel, floor)
            self._floors[channel] = floor
            # Live messages that came during the replay follow it; the channel stays in replay
            # until none is left, so later ones cannot overtake them.
            while replay:
                batch, replay[:] = replay[:], []
                for message in batch:
                    if message["offset"] is None or message["offset"] > floor:
                        await self.outbox.put_paced(self.encode_live(message))
        finally:
            self._replaying.pop(channel, None)

    def reset(self, channel: str, epoch: str) -> None:
        """Called by the hub when a joined channel's history is reset (offsets start again at 0)."""
        if self.closing:
            return
        self._floors[channel] = 0
        self.send_reset(channel, epoch)

    def forget(self, channel: str) -> None:
        """Leave an explicit channel."""
        self.channels.discard(channel)
        self._floors.pop(channel, None)
        self.runtime.hub.leave(channel, self)
        self.runtime.registry.channels_changed(self)
        self._announce_unsubscribed(channel)

    # -- timers and the end ---------------------------------------------------------------------

    def touch(self, now: float) -> None:
        """The connection showed life now (a frame from its client, a heartbeat to an SSE stream)."""
        self.last_seen = now
        self.runtime.registry.seen(self)

    def next_tick(self) -> float:
        """When `tick` is next due: the next heartbeat, the token's expiry, or the idle deadline."""
        due = self.next_heartbeat
        expires_at = self.identity.expires_at
        if expires_at is not None and expires_at < due:
            due = expires_at
        if self.idle_timeout and self.last_seen + self.idle_timeout < due:
            due = self.last_seen + self.idle_timeout + 0.01
        return due

    def tick(self, now: float) -> None:
        """Called by the registry when `next_tick` comes: token expiry, idleness, heartbeats."""
        if self.closing:
            return
        idle_after = self.idle_timeout
        if self.identity.expires_at is not None and now >= self.identity.expires_at:
            self.close(CloseCode.UNAUTHENTICATED, "token expired")
        elif idle_after and now - self.last_seen > idle_after:
            self.close(CloseCode.IDLE, "idle timeout")
        elif now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat_interval
            self.heartbeat(now)

    idle_timeout = 0.0  # seconds without a client frame before an idle close (0: never)
    tick_slot = 0  # where the registry has scheduled the next tick
    subscriptions_counted = 0  # len(channels) as the registry last counted it

    def release(self) -> None:
        """Leave every channel and the registry; runs once, synchronously, on the way out."""
        self.closing = True
        hub = self.runtime.hub
        for channel in (*self.implicit_channels, *self.channels):
            hub.leave(channel, self)
        self.runtime.registry.unregister(self, int(self.close_code or CloseCode.NORMAL))
        self.writer.cancel()
        for channel in self.channels:
            self.announce_presence(channel, "leave")
            self._announce_unsubscribed(channel)
        if self._announced and not self.reaped:
            fire(
                disconnected, self.transport, connection_id=self.connection_id, transport=self.transport,
                identity=self.identity, code=int(self.close_code or CloseCode.NORMAL), reaped=False,
            )  # fmt: skip
        logger.info(
            "disconnect id=%s transport=%s ip=%s user=%s code=%s",
            self.connection_id, self.transport, self.ip, self.identity.user_id or "-", self.close_code,
        )  # fmt: skip

    def announce_presence(self, channel: str, event: str) -> None:
        """Tell a channel's subscribers this connection joined or left it, where the channel has
        join/leave events (presence-* channels, or its namespace's `join_leave`)."""
        if not options(channel).join_leave:
            return
        from streaming import services  # services imports the runtime, which imports this module

        content = protocol.presence_content(
            event=event, user_id=self.identity.user_id, connection_id=self.connection_id
        )
        if self.info is not None:
            content["info"] = self.info
        task = asyncio.ensure_future(
            services.apublish_to_channel(channel=channel, content=content, type=protocol.PRESENCE)
        )
        task.add_done_callback(_log_failure)

    def log_connect(self) -> None:
        logger.info(
            "connect id=%s transport=%s ip=%s user=%s auth=%s",
            self.connection_id, self.transport, self.ip, self.identity.user_id or "-", self.identity.kind,
        )  # fmt: skip


_heartbeat: tuple[float, str] = (-1.0, "")


def heartbeat_text(now: float) -> str:
    """The heartbeat frame of a registry tick, encoded once for every connection due in it."""
    global _heartbeat
    if _heartbeat[0] != now:
        _heartbeat = (now, protocol.encode(protocol.heartbeat()))
    return _heartbeat[1]


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("presence announcement failed: %r", task.exception())


def count_refusal(transport: str, error: StreamingError) -> None:
    """Metrics of a refused connection."""
    if error.status_code == 401:
        metrics.AUTH_FAILURES.labels(transport).inc()
