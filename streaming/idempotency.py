"""Idempotent publishing: a publish whose `id` was published to the same channel within
PUBLISH_IDEMPOTENCY_WINDOW seconds is answered with the first result, and neither stored nor
delivered again — so a backend may retry a request that timed out.

The first publisher of a key claims it; a second one that arrives while the first is still in
flight waits for its result (up to CLAIM_WAIT_SECONDS). With REDIS_URL the claims live in Redis
(`SET … NX PX`), shared by every process; without, in this process, bounded by
PUBLISH_IDEMPOTENCY_KEYS (the oldest are forgotten first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Any

import orjson
import redis
from django.conf import settings

from streaming.bus.redis import PREFIX, RedisBus
from streaming.errors import Unavailable

CLAIM_WAIT_SECONDS = 5.0
_PENDING = b"pending"


class Claim:
    """The outcome of claiming a key: `first` (publish, then `done`/`release`), or the earlier result."""

    __slots__ = ("earlier", "key")

    def __init__(self, key: str | None, earlier: dict[str, Any] | None = None) -> None:
        self.key, self.earlier = key, earlier


class LocalClaims:
    """Claims of this process (no REDIS_URL)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, dict[str, Any] | None]] = OrderedDict()

    async def claim(self, key: str, window: float) -> Claim:
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while True:
            now = time.monotonic()
            entry = self._entries.get(key)
            if entry is None or entry[0] < now:
                self._entries[key] = (now + window, None)
                self._entries.move_to_end(key)
                while len(self._entries) > settings.REALTIME.publish_idempotency_keys:
                    self._entries.popitem(last=False)
                return Claim(key)
            if entry[1] is not None:
                return Claim(None, entry[1])
            if now >= deadline:
                raise Unavailable("A publish with this id is still in flight; retry.")
            await asyncio.sleep(0.01)

    async def done(self, key: str, result: dict[str, Any], window: float) -> None:
        self._entries[key] = (time.monotonic() + window, result)

    async def release(self, key: str) -> None:
        self._entries.pop(key, None)


class RedisClaims:
    """Claims shared by every process, in Redis."""

    def __init__(self, bus: RedisBus) -> None:
        self.bus = bus

    def _client(self, key: str) -> Any:
        return self.bus.clients()[self.bus.shard(key)]

    async def claim(self, key: str, window: float) -> Claim:
        client = self._client(key)
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        try:
            while True:
                if await client.set(key, _PENDING, nx=True, px=int(window * 1000)):
                    return Claim(key)
                value = await client.get(key)
                if value is not None and value != _PENDING:
                    return Claim(None, orjson.loads(value))
                if time.monotonic() >= deadline:
                    raise Unavailable("A publish with this id is still in flight; retry.")
                await asyncio.sleep(0.02)
        except (redis.RedisError, OSError) as error:
            raise Unavailable() from error

    async def done(self, key: str, result: dict[str, Any], window: float) -> None:
        try:
            await self._client(key).set(key, orjson.dumps(result), px=int(window * 1000))
        except (redis.RedisError, OSError) as error:
            raise Unavailable() from error

    async def release(self, key: str) -> None:
        with contextlib.suppress(redis.RedisError, OSError):  # else the claim expires with its window
            await self._client(key).delete(key)


_local = LocalClaims()


def claims() -> LocalClaims | RedisClaims:
    urls = settings.REALTIME.redis_urls
    return RedisClaims(RedisBus.for_urls(urls)) if urls else _local


def claim_key(channel: str, message_id: str) -> str:
    return f"{PREFIX}:i:{channel}:{message_id}"
