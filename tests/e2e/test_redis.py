"""Several daphne processes on one real Redis: one publish reaches WS and SSE clients everywhere."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from tests.support.clients import SSEReader, WSClient
from tests.support.server import ADMIN_HEADERS, ROOT, base_env
from tests.support.services import PrivateRedis

pytestmark = [pytest.mark.redis, pytest.mark.server]


@pytest.fixture(scope="module")
def redis_server():
    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(live_server_factory, redis_server):
    """Two daphne processes on one database and one Redis."""
    return [live_server_factory(REDIS_URL=redis_server.url) for _ in range(2)]


def test_redis_url_selects_the_redis_bus(redis_server, live_server_factory):
    code = "import django; django.setup(); from streaming.bus import get_bus; print(type(get_bus()).__name__)"
    env = base_env(live_server_factory.database_url, REDIS_URL=redis_server.url)
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    assert output.stdout.split() == ["RedisBus"]


async def test_publish_on_one_process_reaches_ws_and_sse_clients_on_the_other(cluster, redis_server):
    a, b = cluster
    async with WSClient(b.ws + "/ws/connect") as ws, SSEReader(b.http + "/sse/connect?channels=cross") as sse:
        await ws.call("subscribe", {"channel": "cross"})
        await sse.until("stream-open")
        # the bus really is Redis: process B's hub has subscribed to the channel there
        channels = [c.decode() for c in redis_server.client().pubsub_channels("realtime*")]
        assert "realtime:c:cross" in channels
        async with httpx.AsyncClient() as http:
            published = (
                await http.post(
                    a.http + "/ws/send-to-channel", json={"channel": "cross", "message": {"content": "from A"}}
                )
            ).json()
        assert (await ws.recv())["id"] == published["id"]
        event = await sse.next_event()
        assert event["data"]["id"] == published["id"] and event["data"]["content"] == "from A"


async def test_ws_client_publish_reaches_other_process_and_personal_channel(cluster):
    from streaming.auth import authenticator

    a, b = cluster
    token = authenticator.create_access_token({"sub": "carol"})
    async with (
        WSClient(f"{a.ws}/ws/connect?token={token}") as carol_a,
        SSEReader(f"{b.http}/sse/connect?token={token}") as carol_b,
    ):
        await carol_b.until("stream-open")
        async with WSClient(b.ws + "/ws/connect") as sender:
            await sender.call("send_to_user", {"user_id": "carol", "content": "hello carol"})
        assert (await carol_a.recv())["content"] == "hello carol"
        assert (await carol_b.next_event())["data"]["content"] == "hello carol"


async def test_stats_presence_and_delete_across_processes(cluster):
    from streaming.auth import authenticator

    a, b = cluster
    token = authenticator.create_access_token({"sub": "dave"})
    async with WSClient(f"{a.ws}/ws/connect?token={token}") as on_a, WSClient(b.ws + "/ws/connect") as on_b:
        await on_a.call("subscribe", {"channel": "room"})
        await on_b.call("subscribe", {"channel": "room"})
        await asyncio.sleep(0.5)  # let process A flush its registry (REGISTRY_FLUSH_INTERVAL=0.2)
        presence = await on_b.call("presence", {"channel": "room"})
        assert presence["content"] == {"channel": "room", "connections": 2, "user_count": 1, "users": ["dave"]}
        async with httpx.AsyncClient() as http:
            stats_a = (await http.get(a.http + "/ws/stats")).json()
            stats_b = (await http.get(b.http + "/ws/stats")).json()
            assert stats_a == stats_b
            assert stats_a["websocket"]["total"] == 2 and stats_a["websocket"]["max"] == 2000
            listed = (await http.get(b.http + "/ws/connections?channel=room", headers=ADMIN_HEADERS)).json()
            assert {c["id"] for c in listed["results"]} == {
                on_a.greeting["data"]["connection_id"],
                on_b.greeting["data"]["connection_id"],
            }
            # DELETE on B closes the connection held by A
            response = await http.delete(
                f"{b.http}/ws/connections/{on_a.greeting['data']['connection_id']}", headers=ADMIN_HEADERS
            )
            assert response.status_code == 204
        import websockets

        with pytest.raises(websockets.ConnectionClosed) as closed:
            await on_a.recv(timeout=2)
        assert closed.value.rcvd.code == 4409


async def test_delivery_survives_a_redis_restart(live_server_factory):
    redis = PrivateRedis().start()
    try:
        a, b = (live_server_factory(REDIS_URL=redis.url) for _ in range(2))
        async with WSClient(b.ws + "/ws/connect") as ws, SSEReader(b.http + "/sse/connect?channels=steady") as sse:
            await ws.call("subscribe", {"channel": "steady"})
            await sse.until("stream-open")
            redis.stop()
            await asyncio.sleep(1)
            redis.start()
            # Publishes answer 503 until process A is back on Redis; messages published before B has
            # resubscribed are lost (at-most-once without persist), so keep publishing until one
            # arrives: delivery must resume on both transports without restarting anything.
            deadline = asyncio.get_running_loop().time() + 20
            statuses = set()
            async with httpx.AsyncClient() as http:
                while True:
                    assert asyncio.get_running_loop().time() < deadline, statuses
                    response = await http.post(
                        a.http + "/ws/send-to-channel", json={"channel": "steady", "message": {"content": "back"}}
                    )
                    statuses.add(response.status_code)
                    if response.status_code == 503:
                        assert response.json()["type"] == "unavailable"
                    try:
                        received = await ws.recv(timeout=0.5)
                        break
                    except TimeoutError:
                        continue
            assert received["content"] == "back"
            assert statuses <= {202, 503}
            event = await sse.next_event(timeout=5)
            assert event["data"]["content"] == "back"
    finally:
        redis.stop()


def test_private_redis_is_isolated(redis_server):
    assert redis_server.client().ping()


async def test_redis_outage_persisted_publishes_commit_and_arrive_when_redis_returns(live_server_factory):
    redis = PrivateRedis().start()
    try:
        a, b = (live_server_factory(REDIS_URL=redis.url) for _ in range(2))
        async with (
            WSClient(b.ws + "/ws/connect") as ws,
            WSClient(a.ws + "/ws/connect") as local,
            httpx.AsyncClient() as http,
        ):
            await ws.call("subscribe", {"channel": "outage"})
            await local.call("subscribe", {"channel": "outage"})
            redis.stop()
            plain = await http.post(
                a.http + "/ws/send-to-channel", json={"channel": "outage", "message": {"content": "lost"}}
            )
            assert plain.status_code == 503 and plain.json()["type"] == "unavailable"
            kept = [
                await http.post(
                    a.http + "/ws/send-to-channel",
                    json={"channel": "outage", "message": {"content": n}, "persist": True},
                )
                for n in range(5)
            ]
            assert [r.status_code for r in kept] == [202] * 5
            assert [r.json()["offset"] for r in kept] == [1, 2, 3, 4, 5]
            health = await http.get(a.http + "/healthz")
            assert health.status_code == 503 and health.json()["checks"]["bus"].startswith("error")
            # the publishing process's own subscribers need no bus: they have them already
            assert [(await local.recv(timeout=5))["offset"] for _ in range(5)] == [1, 2, 3, 4, 5]
            redis.start()
            # process A retries what the bus refused; B has resubscribed: the messages arrive live, in order
            received = [await ws.recv(timeout=15) for _ in range(5)]
            assert [m["offset"] for m in received] == [1, 2, 3, 4, 5]
            assert (await http.get(a.http + "/healthz")).status_code == 200
            # once the retry has gone through the bus, the local subscriber is not sent them twice
            await ws.call("send_to_channel", {"channel": "outage", "content": "after", "persist": True})
            assert (await local.recv(timeout=5))["offset"] == 6
    finally:
        redis.stop()


async def test_a_process_joins_the_bus_before_its_first_connection(live_server_factory):
    redis = PrivateRedis().start()
    try:
        server = live_server_factory(REDIS_URL=redis.url)
        # Nothing has connected yet: the process's address is already subscribed in Redis, so the
        # first handshakes of a reconnect storm do not wait for it (they passed daphne's connect timeout).
        channels = [c.decode() for c in redis.client().pubsub_channels("realtime*")]
        assert [name for name in channels if name.startswith("realtime:p:")], channels
        assert "runtime not started" not in server.log()
    finally:
        redis.stop()


async def test_a_process_started_while_redis_is_down_serves_once_it_is_back(live_server_factory):
    redis = PrivateRedis()  # its port is reserved, nothing listens on it yet
    server = live_server_factory(REDIS_URL=redis.url)
    try:
        assert "runtime not started at start-up" in server.log()
        async with httpx.AsyncClient() as http:
            assert (await http.get(server.http + "/api/")).status_code == 200
        redis.start()
        async with WSClient(server.ws + "/ws/connect") as ws:  # the first connection starts it
            assert ws.greeting["type"] == "connected"
            assert (await ws.call("subscribe", {"channel": "late"}))["type"] == "subscribed"
    finally:
        redis.stop()
