"""The production shape: three daphne processes behind nginx (deploy/nginx.conf), on real Redis
and PostgreSQL, with the failure modes: a killed backend, a Redis outage, a graceful stop.

Run alone with `make test-cluster`.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.support.clients import SSEReader, WSClient
from tests.support.cluster import Cluster, Subscriber, connections_by_process, publish_steadily
from tests.support.server import ADMIN_HEADERS

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.postgres, pytest.mark.server]


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster()
    yield cluster
    cluster.close()


async def test_clients_on_different_backends_receive_each_others_publishes(cluster):
    clients = [await WSClient(cluster.nginx.ws + "/ws/connect").__aenter__() for _ in range(6)]
    streams = [await SSEReader(cluster.nginx.http + "/sse/connect?channels=mesh").__aenter__() for _ in range(3)]
    try:
        for client in clients:
            await client.call("subscribe", {"channel": "mesh"})
        for stream in streams:
            await stream.until("stream-open")
        await asyncio.sleep(0.5)  # registry flush of every process
        processes = await connections_by_process(cluster, "mesh")
        assert len(processes) == 9 and len(set(processes.values())) == 3  # nginx spread them over all backends
        for n, sender in enumerate(clients):
            await sender.call("send_to_channel", {"channel": "mesh", "content": n})
        for client in clients:
            got = sorted([(await client.recv())["content"] for _ in range(6)])
            assert got == list(range(6))
        for stream in streams:
            got = sorted([(await stream.next_event())["data"]["content"] for _ in range(6)])
            assert got == list(range(6))
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
        for stream in streams:
            await stream.__aexit__(None, None, None)


async def test_stats_and_connection_lists_agree_and_delete_works_across_processes(cluster):
    clients = [await WSClient(cluster.nginx.ws + "/ws/connect").__aenter__() for _ in range(3)]
    try:
        for client in clients:
            await client.call("subscribe", {"channel": "agree"})
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as http:
            stats = [(await http.get(server.http + "/ws/stats")).json() for server in cluster.servers]
            lists = [
                (await http.get(server.http + "/ws/connections?channel=agree", headers=ADMIN_HEADERS)).json()
                for server in cluster.servers
            ]
            assert stats[0] == stats[1] == stats[2]
            assert stats[0]["websocket"]["max"] == 3000
            assert (
                {c["id"] for c in lists[0]["results"]}
                == {c["id"] for c in lists[1]["results"]}
                == {c["id"] for c in lists[2]["results"]}
            )
            for client in clients:  # DELETE through nginx lands on any backend
                response = await http.delete(
                    cluster.nginx.http + f"/ws/connections/{client.greeting['data']['connection_id']}",
                    headers=ADMIN_HEADERS,
                )
                assert response.status_code == 204
        for client in clients:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await client.recv(timeout=3)
            assert closed.value.rcvd.code == 4409
    finally:
        for client in clients:
            await client.socket.close()


async def test_killed_backend_clients_reconnect_and_recover_exactly_once(cluster):
    victim = cluster.servers[0]
    subscribers = [Subscriber(cluster.nginx.ws + "/ws/connect", "failover") for _ in range(6)]
    until = time.monotonic() + 8
    tasks = [asyncio.create_task(s.run(until)) for s in subscribers]
    await asyncio.sleep(1)
    publisher = asyncio.create_task(publish_steadily(cluster.servers[1].http, "failover", 40, rate=10))
    await asyncio.sleep(1)
    victim.kill()  # SIGKILL mid-stream
    offsets = await publisher
    await asyncio.gather(*tasks)
    assert sum(s.reconnects for s in subscribers) >= 1  # some were on the killed backend
    for subscriber in subscribers:
        delivered = [o for o in subscriber.offsets if offsets[0] <= o <= offsets[-1]]
        assert delivered == offsets, f"lost or duplicated: {sorted(set(offsets) ^ set(delivered))}"
        assert len(subscriber.ids) == len(set(subscriber.ids))
    # the killed process's rows are reaped by the survivors within 2 x WEBSOCKET_DISCONNECT_TIMEOUT
    deadline = time.monotonic() + 6
    async with httpx.AsyncClient() as http:
        while True:
            stats = (await http.get(cluster.servers[1].http + "/ws/stats")).json()
            listed = (
                await http.get(cluster.servers[1].http + "/ws/connections?page_size=1000", headers=ADMIN_HEADERS)
            ).json()["results"]
            if stats["websocket"]["max"] == 2000 and not [
                c for c in listed if c["process"].split(":")[1] == str(victim.last_pid)
            ]:
                break
            assert time.monotonic() < deadline, "ghost connections of the killed backend remain"
            await asyncio.sleep(0.3)
    victim.start()  # back in the pool for the next tests


async def test_redis_outage_loses_no_persisted_message_and_delivery_resumes(cluster):
    subscribers = [Subscriber(cluster.nginx.ws + "/ws/connect", "outage") for _ in range(3)]
    stream = await SSEReader(cluster.nginx.http + "/sse/connect?channels=outage").__aenter__()
    await stream.until("stream-open")
    until = time.monotonic() + 14
    tasks = [asyncio.create_task(s.run(until)) for s in subscribers]
    await asyncio.sleep(0.5)
    publisher = asyncio.create_task(publish_steadily(cluster.servers[1].http, "outage", 50 * 7, rate=50))
    await asyncio.sleep(1)
    cluster.redis.stop()
    await asyncio.sleep(5)
    cluster.redis.start()
    offsets = await publisher
    await asyncio.gather(*tasks)
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))  # every publish committed, gapless
    for subscriber in subscribers:
        assert subscriber.reconnects == 0  # connections stayed open through the outage
        delivered = [o for o in subscriber.offsets if offsets[0] <= o <= offsets[-1]]
        assert sorted(set(delivered)) == offsets  # everything arrived live once Redis was back
    sse_offsets = set()
    while True:
        try:
            event = await stream.next_event(timeout=2)
        except TimeoutError:
            break
        if event["data"].get("offset") is not None:
            sse_offsets.add(event["data"]["offset"])
    await stream.__aexit__(None, None, None)
    assert set(offsets) <= sse_offsets


async def test_sigterm_sends_1001_through_nginx(cluster):
    target = cluster.servers[2]
    clients = [await WSClient(cluster.nginx.ws + "/ws/connect").__aenter__() for _ in range(6)]
    await asyncio.sleep(0.5)
    on_target = {
        cid
        for cid, process in (await connections_by_process(cluster)).items()
        if process.split(":")[1] == str(target.process_pid)
    }
    assert on_target
    target.stop()
    codes = {}
    for client in clients:
        connection_id = client.greeting["data"]["connection_id"]
        if connection_id in on_target:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await client.recv(timeout=5)
            codes[connection_id] = closed.value.rcvd.code
        await client.socket.close()
    assert set(codes.values()) == {1001}
    target.start()


_ = json


async def test_nginx_access_log_keeps_tokens_out(cluster):
    from streaming.auth import authenticator

    token = authenticator.create_access_token({"sub": "logged"})
    async with SSEReader(f"{cluster.nginx.http}/sse/connect?channels=quiet&token={token}") as stream:
        await stream.until("stream-open")
    async with httpx.AsyncClient() as http:
        await http.get(f"{cluster.nginx.http}/ws/stats?api_key=marker-key-123")
    log_path = cluster.nginx.directory / "access.log"
    for _ in range(40):  # lines are written as requests complete
        log = log_path.read_text()
        if "/sse/connect" in log and "/ws/stats" in log:
            break
        await asyncio.sleep(0.05)
    assert "/sse/connect" in log and "/ws/stats" in log
    assert token not in log and "marker-key-123" not in log
