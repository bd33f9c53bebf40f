"""Faults in the production shape, at scale: two daphne backends behind nginx on a private Redis
and a private PostgreSQL (tests/support/cluster.py, the harness of tests/e2e/test_cluster.py).

* Redis stopped for 5 s during 50 persisted publishes/s: nothing lost, nobody reconnects,
  delivery resumes (tests/e2e/test_cluster.py checks the same with 3 clients; here 200 + 20).
* `kill -9` of one of two backends holding 1,000 WebSockets: every client back within 15 s, the
  gap recovered exactly once, the dead process's connections reaped.
* PostgreSQL stopped for 3 s: publishes get a clear 503 (WebSocket: `unavailable`), and work
  again as soon as it is back, with no server restarted and no client reconnecting.
* SIGTERM: 1001 to every WebSocket and `stream-error` `shutdown` to every SSE stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from tests.support.clients import SSEReader, WSClient
from tests.support.cluster import Cluster, Subscriber, connections_by_process, publish_steadily
from tests.support.server import ADMIN_HEADERS
from tests.support.services import PrivatePostgres

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.server,
    pytest.mark.timeout(900),
]

# A thousand clients answer heartbeats: every 4 s, not every second; the liveness window (and so
# the reaping of a dead backend's rows, within 2 × 10 s) is set to match. The history must reach
# back over the whole Redis outage (5 s × 50/s = 250 messages; the default keeps 100): messages
# pruned before a process recovers them are gone (docs/RELIABILITY.md, finding on continuity).
ENV = {
    "WEBSOCKET_HEARTBEAT_INTERVAL": "4", "WEBSOCKET_DISCONNECT_TIMEOUT": "10", "WEBSOCKET_MAX_CONNECTIONS": "2000",
    "CHANNEL_HISTORY_SIZE": "1000",
}  # fmt: skip


@pytest.fixture(scope="module")
def postgres():
    server = PrivatePostgres().start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def cluster(postgres):
    cluster = Cluster(size=2, database_url=postgres.url, **ENV)
    yield cluster
    cluster.close()


async def start_subscribers(count: int, url: str, channel: str, until: float) -> tuple[list[Subscriber], list]:
    subscribers = [Subscriber(url, channel, address=f"10.0.{n // 250}.{n % 250 + 1}") for n in range(count)]
    gate = asyncio.Semaphore(100)  # the first connects in waves; reconnects later are a storm

    async def run(subscriber: Subscriber) -> None:
        async with gate:
            task = asyncio.create_task(subscriber.run(until))
            await subscriber.ready.wait()
        await task

    tasks = [asyncio.create_task(run(s)) for s in subscribers]
    await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 120)
    return subscribers, tasks


async def until_all_received(subscribers: list[Subscriber], last: int, timeout: float) -> None:
    """Wait until every subscriber has seen offset `last` (or the timeout), then stop them all."""
    deadline = time.monotonic() + timeout
    while not all(s.offsets and s.offsets[-1] >= last for s in subscribers) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for subscriber in subscribers:
        subscriber.stopping = True


async def ghosts_gone_after(survivor, victim, since: float, timeout: float) -> float | None:
    """Seconds after `since` until no open connection row of the killed process is left."""
    async with httpx.AsyncClient() as http:
        while time.monotonic() - since < timeout:
            listed = (await http.get(survivor.http + "/ws/connections?page_size=1000", headers=ADMIN_HEADERS)).json()[
                "results"
            ]
            if not [c for c in listed if c["process"].split(":")[1] == str(victim.last_pid)]:
                return round(time.monotonic() - since, 1)
            await asyncio.sleep(0.5)
    return None


def exactly_once(subscriber: Subscriber, offsets: list[int]) -> bool:
    delivered = [o for o in subscriber.offsets if offsets[0] <= o <= offsets[-1]]
    return delivered == offsets and len(subscriber.ids) == len(set(subscriber.ids))


async def test_redis_stopped_5s_during_50_persisted_publishes_per_second(cluster, figure):
    channel = "outage-at-scale"
    until = time.monotonic() + 60
    subscribers, tasks = await start_subscribers(200, cluster.nginx.ws + "/ws/connect", channel, until)
    streams = [await SSEReader(f"{cluster.nginx.http}/sse/connect?channels={channel}").__aenter__() for _ in range(20)]
    for stream in streams:
        await stream.until("stream-open")
    publisher = asyncio.create_task(publish_steadily(cluster.servers[1].http, channel, 50 * 8, rate=50))
    await asyncio.sleep(1.5)
    cluster.redis.stop()
    await asyncio.sleep(5)
    cluster.redis.start()
    offsets = await publisher
    last_published = time.monotonic()
    await until_all_received(subscribers, offsets[-1], 30)
    caught_up_within = time.monotonic() - last_published
    await asyncio.gather(*tasks)
    sse_offsets = []
    for stream in streams:
        got = set()
        while offsets[-1] not in got:
            event = await stream.next_event(timeout=10)
            if event["event"] == "message":
                got.add(event["data"]["offset"])
        sse_offsets.append(got)
        await stream.__aexit__(None, None, None)
    lost = sum(len(set(offsets) - set(s.offsets)) for s in subscribers) + sum(
        len(set(offsets) - g) for g in sse_offsets
    )
    figure(
        published=len(offsets), gapless=offsets == list(range(offsets[0], offsets[0] + len(offsets))),
        ws_subscribers=len(subscribers), sse_streams=len(streams), lost=lost,
        reconnects=sum(s.reconnects for s in subscribers), all_ws_caught_up_s_after_last_publish=round(caught_up_within, 2),
        not_exactly_once=sum(1 for s in subscribers if not exactly_once(s, offsets)),
    )  # fmt: skip
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    assert lost == 0
    assert sum(s.reconnects for s in subscribers) == 0
    assert all(exactly_once(s, offsets) for s in subscribers)


async def test_kill_9_of_one_of_two_backends_holding_1000_connections(cluster, figure):
    victim, survivor = cluster.servers
    channel = "failover-at-scale"
    until = time.monotonic() + 75
    subscribers, tasks = await start_subscribers(1000, cluster.nginx.ws + "/ws/connect", channel, until)
    await asyncio.sleep(1.5)  # registry flush of both processes
    by_process = await connections_by_process(cluster, channel)
    on_victim = sum(1 for process in by_process.values() if process.split(":")[1] == str(victim.process_pid))
    publisher = asyncio.create_task(publish_steadily(survivor.http, channel, 5 * 25, rate=5))
    await asyncio.sleep(3)
    victim.kill()
    killed_at = time.monotonic()
    ghosts = asyncio.create_task(ghosts_gone_after(survivor, victim, killed_at, timeout=30))
    offsets = await publisher
    await until_all_received(subscribers, offsets[-1], 30)
    await asyncio.gather(*tasks)
    moved = [s for s in subscribers if s.reconnects]
    back_within = max(s.reconnected_at - killed_at for s in moved) if moved else 0.0
    wrong = [s for s in subscribers if not exactly_once(s, offsets)]
    ghosts_left_after = await ghosts
    figure(
        connections=len(subscribers), on_killed_backend=on_victim, reconnected=len(moved),
        all_back_within_s=round(back_within, 2), published=len(offsets), not_exactly_once=len(wrong),
        ghosts_reaped_within_s=ghosts_left_after,
    )  # fmt: skip
    victim.start()  # back in the pool for the next tests
    assert on_victim > 0 and len(moved) >= on_victim
    assert back_within <= 15
    assert not wrong, f"{len(wrong)} subscribers lost or repeated messages"
    assert ghosts_left_after is not None, "the killed backend's connections were not reaped"
    assert ghosts_left_after <= 2 * float(ENV["WEBSOCKET_DISCONNECT_TIMEOUT"])  # README, "Architecture"


async def test_postgres_stopped_publishes_get_503_then_work_without_a_server_restart(cluster, postgres, figure):
    pids = [server.process_pid for server in cluster.servers]
    body = {"channel": "pg-outage", "message": {"content": "x"}, "persist": True}
    async with WSClient(cluster.nginx.ws + "/ws/connect") as ws, httpx.AsyncClient(timeout=30) as http:
        async with kept_alive(ws):
            assert (await http.post(cluster.nginx.http + "/ws/send-to-channel", json=body)).status_code == 202
            await asyncio.to_thread(postgres.stop)
            stopped = time.monotonic()
        try:
            async with kept_alive(ws):
                down = await http.post(cluster.nginx.http + "/ws/send-to-channel", json=body)
            ws_down = await ws.call("send_to_channel", {"channel": "pg-outage", "content": "x", "persist": True}, 30)
            async with kept_alive(ws):
                # Every process meets the outage, and it lasts long enough for reconnect back-off to grow.
                each_down = await asyncio.gather(
                    *(http.post(server.http + "/ws/send-to-channel", json=body) for server in cluster.servers)
                )
                await asyncio.sleep(max(0.0, 15 - (time.monotonic() - stopped)))
        finally:
            await asyncio.to_thread(postgres.start)
        started = time.monotonic()
        async with kept_alive(ws):
            # Every process must come back by itself, not only the one nginx happens to pick first.
            recovered_within = await asyncio.gather(
                *(publishes_again(http, server.http, body, started) for server in cluster.servers)
            )
        ws_back = await ws.call("send_to_channel", {"channel": "pg-outage", "content": "y", "persist": True}, 30)
        stats = [await http.get(server.http + "/ws/stats") for server in cluster.servers]
    figure(
        during_outage_http=f"{down.status_code} {down.json()}", retry_after=down.headers.get("retry-after"),
        during_outage_ws=ws_down["content"]["type"], outage_s=round(started - stopped, 1),
        publishes_202_again_within_s=[round(seconds, 2) for seconds in recovered_within],
        servers_restarted=sum(1 for server, pid in zip(cluster.servers, pids, strict=True) if server.process_pid != pid),
    )  # fmt: skip
    assert down.status_code == 503 and down.json()["type"] == "unavailable" and down.headers["retry-after"]
    assert ws_down["type"] == "error" and ws_down["content"]["type"] == "unavailable"
    assert [response.status_code for response in each_down] == [503] * len(each_down)
    assert ws_back["type"] == "ack" and [response.status_code for response in stats] == [200] * len(stats)
    assert max(recovered_within) <= 5, recovered_within
    assert [server.process_pid for server in cluster.servers] == pids and all(
        server.process.poll() is None for server in cluster.servers
    )


@contextlib.asynccontextmanager
async def kept_alive(ws: WSClient) -> AsyncIterator[None]:
    """`ws` answers the server's heartbeats in the background meanwhile, as a live client does (one
    silent for WEBSOCKET_DISCONNECT_TIMEOUT is closed with 4408); what else it receives is dropped."""

    async def answer() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await ws.recv(timeout=0.5)

    task = asyncio.create_task(answer())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def publishes_again(http: httpx.AsyncClient, base: str, body: dict, since: float) -> float:
    """Seconds from `since` until a persisted publish to this one process answers 202."""
    statuses = []
    while True:
        response = await http.post(base + "/ws/send-to-channel", json=body)
        statuses.append(response.status_code)
        if response.status_code == 202:
            return time.monotonic() - since
        assert time.monotonic() - since < 30, statuses
        await asyncio.sleep(0.2)


async def test_sigterm_sends_1001_to_every_websocket_and_ends_every_stream(cluster, figure):
    target = cluster.servers[0]
    sockets = []
    for n in range(500):  # 500 clients (each its own address; one address may hold 250 connections)
        socket = await websockets.connect(
            target.ws + "/ws/connect", additional_headers={"X-Forwarded-For": f"10.1.{n // 250}.{n % 250 + 1}"}
        )
        assert json.loads(await socket.recv())["type"] == "connected"
        sockets.append(socket)
    streams = [await SSEReader(f"{target.http}/sse/connect?channels=bye").__aenter__() for _ in range(50)]
    for stream in streams:
        await stream.until("stream-open")
    started = time.monotonic()
    target.stop()  # SIGTERM, waits for the process to exit

    async def close_code(socket) -> int | None:
        try:
            while True:
                await asyncio.wait_for(socket.recv(), 10)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    codes = await asyncio.gather(*(close_code(socket) for socket in sockets))
    conditions = []
    for stream in streams:
        conditions.append((await stream.until("stream-error", timeout=10))["data"]["condition"])
        await stream.__aexit__(None, None, None)
    figure(
        websockets=len(sockets), closed_1001=codes.count(1001), sse_streams=len(streams),
        sse_shutdown=conditions.count("shutdown"), process_exited_within_s=round(time.monotonic() - started, 2),
    )  # fmt: skip
    target.start()
    assert codes.count(1001) == len(sockets), sorted(set(codes), key=str)
    assert conditions.count("shutdown") == len(streams)
