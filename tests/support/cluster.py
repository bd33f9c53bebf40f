"""The production shape for end-to-end tests: daphne processes behind nginx (deploy/nginx.conf) on
a private Redis and a fresh PostgreSQL database, and clients that behave like the real ones.

Used by tests/e2e/test_cluster.py (three backends) and the reliability suite (two backends
holding a thousand connections, a PostgreSQL restart).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import websockets

from tests.support.clients import WSClient
from tests.support.nginx import Nginx
from tests.support.server import ADMIN_HEADERS, LiveServer, migrate
from tests.support.services import PrivateRedis, create_postgres_database, drop_postgres_database

ENV = {
    "WEBSOCKET_DISCONNECT_TIMEOUT": "3",  # liveness window: a killed process is reaped within 6 s
    "WEBSOCKET_HEARTBEAT_INTERVAL": "1",
    "TRUSTED_PROXIES": "127.0.0.1/32",
}


class Cluster:
    """`size` daphne processes behind nginx on private Redis servers (one by default; channels are
    sharded over several) and a fresh PostgreSQL database."""

    def __init__(self, size: int = 3, database_url: str | None = None, redis_servers: int = 1, **env: str) -> None:
        self.redises = [PrivateRedis().start() for _ in range(redis_servers)]
        self.redis = self.redises[0]
        self.own_database = database_url is None
        self.database_url = database_url or create_postgres_database()
        migrate(self.database_url)
        self.env = {**ENV, **env}
        redis_url = ",".join(redis.url for redis in self.redises)  # channels sharded over them all
        self.servers = [LiveServer(self.database_url, REDIS_URL=redis_url, **self.env).start() for _ in range(size)]
        self.nginx = Nginx([server.port for server in self.servers]).start()

    def close(self) -> None:
        self.nginx.stop()
        for server in self.servers:
            server.kill()
        for redis in self.redises:
            redis.stop()
        if self.own_database:
            drop_postgres_database(self.database_url)


async def connections_by_process(cluster: Cluster, channel: str | None = None) -> dict[str, str]:
    """Connection id → the `process` of its row, for every live connection (of a channel)."""
    query = f"&channel={channel}" if channel else ""
    async with httpx.AsyncClient() as http:
        listed = (
            await http.get(cluster.nginx.http + f"/ws/connections?page_size=1000{query}", headers=ADMIN_HEADERS)
        ).json()
    return {c["id"]: c["process"] for c in listed["results"]}


class Subscriber:
    """A WebSocket client through nginx that reconnects and resumes from its last offset.

    `address` is the client's own address as a proxy in front would report it (X-Forwarded-For,
    which nginx extends): a thousand subscribers from one test process are a thousand clients, each
    with its own connection count and rate budget, not one client over the per-address limits."""

    def __init__(self, url: str, channel: str, address: str | None = None) -> None:
        self.url, self.channel = url, channel
        self.headers = {"X-Forwarded-For": address} if address else None
        self.offsets: list[int] = []
        self.ids: list[str] = []
        self.reconnects = 0
        self.client: WSClient | None = None
        self.closed_at: float | None = None  # when the server closed it last
        self.reconnected_at: float | None = None  # when it was subscribed again after that
        self.ready = asyncio.Event()  # set once first subscribed
        self.stopping = False  # set to end `run` before its deadline

    async def connect(self) -> None:
        self.client = await WSClient(self.url, additional_headers=self.headers).__aenter__()
        since = self.offsets[-1] if self.offsets else None
        data = {"channel": self.channel} | ({"since": since} if since is not None else {})
        reply = await self.client.call("subscribe", data, timeout=10)
        assert reply["type"] == "subscribed", reply
        if since is not None:
            assert reply["content"]["recovered"] is True, reply
        self.ready.set()

    async def run(self, until: float) -> None:
        await self.connect()
        while time.monotonic() < until and not self.stopping:
            try:
                frame = await self.client.recv(timeout=0.5)
            except TimeoutError:
                continue
            except websockets.ConnectionClosed:
                self.reconnects += 1
                self.closed_at = time.monotonic()
                while True:
                    try:
                        await self.connect()
                        break
                    except (OSError, TimeoutError, websockets.InvalidStatus, websockets.ConnectionClosed):
                        await asyncio.sleep(0.2)
                self.reconnected_at = time.monotonic()
                continue
            if frame.get("channel") == self.channel and frame.get("offset") is not None:
                self.offsets.append(frame["offset"])
                self.ids.append(frame["id"])
        await self.client.socket.close()


async def publish_steadily(url: str, channel: str, count: int, rate: float) -> list[int]:
    """POST `count` persisted messages, the n-th at `n / rate` seconds; returns their offsets."""
    offsets = []
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        for n in range(count):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            response = await http.post(
                url + "/ws/send-to-channel", json={"channel": channel, "message": {"content": n}, "persist": True}
            )
            assert response.status_code == 202, response.text
            offsets.append(response.json()["offset"])
    return offsets
