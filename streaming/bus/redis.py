"""The bus over Redis pub/sub (REDIS_URL): one `PUBLISH` per publish, channels sharded over servers.

A channel is the Redis channel `realtime:c:<name>` on the server `crc32(name) % len(REDIS_URL)`;
a process listens on `realtime:p:<id>` for commands. Each process keeps one pub/sub connection
per Redis server; subscription changes are batched into one SUBSCRIBE/UNSUBSCRIBE per loop turn
(a reconnect storm joins thousands of channels), and after a lost connection the process
resubscribes everything and tells its hub, which checks the positions of persisted messages.

A publish travels as `P` + `[channel, offset, event, sent_at]` (JSON) + newline + the envelope
text, so nothing on either side encodes or decodes the envelope again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
import weakref
import zlib
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import redis
import redis.asyncio

from streaming.bus.resp import Publisher, RespConnection, RespError
from streaming.errors import Unavailable

if TYPE_CHECKING:
    from streaming.hub import Hub

logger = logging.getLogger(__name__)

PREFIX = "realtime"
RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0)


def channel_key(channel: str) -> str:
    return f"{PREFIX}:c:{channel}"


def encode_publish(message: dict[str, Any]) -> bytes:
    fields = [message["channel"], message["offset"], message["event"], message["sent_at"]]
    if message.get("epoch"):
        fields.append(message["epoch"])
    return b"P" + orjson.dumps(fields) + b"\n" + message["text"].encode()


def decode(payload: bytes) -> dict[str, Any]:
    if payload[:1] == b"P":
        head, _, text = payload.partition(b"\n")
        fields = orjson.loads(head[1:])
        channel, offset, event, sent_at = fields[:4]
        return {"type": "hub.publish", "channel": channel, "offset": offset, "event": event,
                "text": text.decode(), "sent_at": sent_at, "epoch": fields[4] if len(fields) > 4 else None}  # fmt: skip
    return orjson.loads(payload[1:])


def encode_command(command: dict[str, Any]) -> bytes:
    return b"C" + orjson.dumps(command)


class RedisBus:
    """The bus of this process over one or more Redis servers."""

    _buses: ClassVar[dict[tuple[str, ...], RedisBus]] = {}
    _buses_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self._sync = [redis.Redis.from_url(url) for url in urls]  # thread-safe pools, for sync publishers
        self._async: dict[asyncio.AbstractEventLoop, list[redis.asyncio.Redis]] = {}
        self._publishers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Publisher]] = (
            weakref.WeakKeyDictionary()
        )
        self._listeners: dict[Hub, list[_Listener]] = {}

    @classmethod
    def for_urls(cls, urls: tuple[str, ...]) -> RedisBus:
        """The process's bus for these servers."""
        bus = cls._buses.get(urls)
        if bus is None:
            with cls._buses_lock:
                bus = cls._buses.setdefault(urls, cls(urls))
        return bus

    def shard(self, name: str) -> int:
        return zlib.crc32(name.encode()) % len(self.urls)

    def clients(self) -> list[redis.asyncio.Redis]:
        """Async clients of the running loop (redis' asyncio connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        clients = self._async.get(loop)
        if clients is None:
            clients = self._async[loop] = [redis.asyncio.Redis.from_url(url) for url in self.urls]
        return clients

    # -- the hub side ---------------------------------------------------------------------------

    async def attach(self, hub: Hub) -> str:
        address = f"{PREFIX}:p:{uuid.uuid4().hex}"
        listeners = [_Listener(url, hub) for url in self.urls]
        self._listeners[hub] = listeners
        await asyncio.gather(*(listener.start() for listener in listeners))
        await listeners[self.shard(address)].want(address)
        return address

    async def detach(self, hub: Hub) -> None:
        for listener in self._listeners.pop(hub, []):
            await listener.stop()

    async def subscribe(self, hub: Hub, channel: str) -> None:
        await self._listeners[hub][self.shard(channel)].want(channel_key(channel))

    def unsubscribe(self, hub: Hub, channel: str) -> None:
        listeners = self._listeners.get(hub)
        if listeners is not None:
            listeners[self.shard(channel)].unwant(channel_key(channel))

    # -- the publisher side ---------------------------------------------------------------------

    def publish(self, channel: str, message: dict[str, Any]) -> None:
        """PUBLISH from sync code (a thread): no hop to an event loop."""
        try:
            self._sync[self.shard(channel)].publish(channel_key(channel), encode_publish(message))
        except redis.RedisError as error:
            raise Unavailable() from error

    def publishers(self) -> list[Publisher]:
        """The PUBLISH connections of the running loop (see `resp.py`), one per server."""
        loop = asyncio.get_running_loop()
        publishers = self._publishers.get(loop)
        if publishers is None:
            publishers = self._publishers[loop] = [Publisher(url) for url in self.urls]
        return publishers

    async def apublish(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self.publishers()[self.shard(channel)].publish(channel_key(channel).encode(), encode_publish(message))
        except (RespError, OSError) as error:
            raise Unavailable() from error

    async def apublish_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """PUBLISH several, in order: pipelined on each server's connection (one write per loop turn)."""
        publishers = self.publishers()
        sent = [
            publishers[self.shard(channel)].publish(channel_key(channel).encode(), encode_publish(message))
            for channel, message in messages
        ]
        try:
            await asyncio.gather(*sent)
        except (RespError, OSError) as error:
            raise Unavailable() from error

    async def asend(self, address: str, command: dict[str, Any]) -> None:
        try:
            await self.clients()[self.shard(address)].publish(address, encode_command(command))
        except (redis.RedisError, OSError) as error:
            raise Unavailable() from error

    async def arequest(self, address: str, command: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send a command and wait for its answer on a reply channel of its own (None: no answer)."""
        reply_to = f"{PREFIX}:r:{uuid.uuid4().hex}"
        client = self.clients()[self.shard(reply_to)]
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(reply_to)
            await self.asend(address, {**command, "reply_to": reply_to})
            async with asyncio.timeout(timeout):
                while True:
                    message = await pubsub.get_message(timeout=timeout)
                    if message is not None and message["type"] == "message":
                        return decode(message["data"])
        except TimeoutError:
            return None
        except (redis.RedisError, OSError) as error:
            raise Unavailable() from error
        finally:
            await pubsub.aclose()

    async def aping(self) -> None:
        await asyncio.gather(*(client.ping() for client in self.clients()))


class _Listener:
    """One pub/sub connection to one Redis server: the subscriptions of a hub there, kept up."""

    def __init__(self, url: str, hub: Hub) -> None:
        self.url = url
        self.hub = hub
        self.wanted: set[bytes] = set()
        self.subscribed: set[bytes] = set()
        self.connection: RespConnection | None = None
        self._changed = asyncio.Event()
        self._synced: asyncio.Future | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.connection = await RespConnection.open(self.url, on_push=self._push)
        self._tasks = [asyncio.create_task(self._watch(), name="bus-watch"),
                       asyncio.create_task(self._sync_loop(), name="bus-subscriber")]  # fmt: skip

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.connection is not None:
            self.connection.close()

    def _push(self, reply: list) -> None:
        """A message on a subscribed channel: [b"message", channel, payload]."""
        try:
            self.hub.receive(decode(reply[2]))
        except Exception:
            logger.exception("bus message handling failed")

    async def want(self, key: str) -> None:
        """Subscribe (batched with this loop turn's others); returns once the command is sent."""
        raw = key.encode()
        self.wanted.add(raw)
        if raw in self.subscribed:
            return
        await asyncio.shield(self._request_sync())

    def unwant(self, key: str) -> None:
        raw = key.encode()
        self.wanted.discard(raw)
        if raw in self.subscribed:
            self._request_sync()

    def _request_sync(self) -> asyncio.Future:
        if self._synced is None or self._synced.done():
            self._synced = asyncio.get_running_loop().create_future()
        self._changed.set()
        return self._synced

    async def _sync_loop(self) -> None:
        """Send the net subscription changes, one SUBSCRIBE and one UNSUBSCRIBE at a time."""
        while True:
            await self._changed.wait()
            await asyncio.sleep(0)  # let this loop turn's joins and leaves gather
            self._changed.clear()
            done, self._synced = self._synced, None
            try:
                self._send_changes()
            except (RespError, OSError) as error:  # the watcher reconnects and resubscribes all
                logger.warning("bus subscription change failed: %r", error)
            if done is not None and not done.done():
                done.set_result(None)

    def _send_changes(self) -> None:
        add, drop = self.wanted - self.subscribed, self.subscribed - self.wanted
        if add:
            self.connection.send(b"SUBSCRIBE", *add)
            self.subscribed |= add
        if drop:
            self.connection.send(b"UNSUBSCRIBE", *drop)
            self.subscribed -= drop

    async def _watch(self) -> None:
        """When the connection is lost, open another, resubscribe everything, tell the hub."""
        while True:
            error = await self.connection.lost
            logger.warning("bus connection lost (%r); reconnecting", error)
            attempt = 0
            while True:
                await asyncio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
                attempt += 1
                try:
                    self.connection = await RespConnection.open(self.url, on_push=self._push)
                except (OSError, TimeoutError, RespError):
                    continue
                self.subscribed = set()
                self._send_changes()
                break
            logger.info("bus connection back; %d subscriptions restored", len(self.subscribed))
            self.hub.bus_reconnected()
