"""The production shape on two Redis servers: REDIS_URL lists both, channels are sharded over them."""

from __future__ import annotations

import asyncio
import time
import zlib

import httpx
import pytest

from tests.support.clients import SSEReader, WSClient
from tests.support.cluster import Cluster, Subscriber, publish_steadily

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.postgres, pytest.mark.server]

CHANNELS = [f"shard-{n}" for n in range(8)]


def shard_of(channel: str) -> int:
    """The Redis server of a channel: its position in REDIS_URL, crc32 of the name modulo their number."""
    return zlib.crc32(channel.encode()) % 2


@pytest.fixture(scope="module")
def sharded():
    cluster = Cluster(size=2, redis_servers=2)
    yield cluster
    cluster.close()


async def test_publishes_cross_processes_on_channels_of_both_redis_servers(sharded):
    on_a = [await WSClient(sharded.servers[0].ws + "/ws/connect").__aenter__() for _ in CHANNELS]
    stream = await SSEReader(sharded.servers[0].http + "/sse/connect?channels=" + ",".join(CHANNELS)).__aenter__()
    try:
        for client, channel in zip(on_a, CHANNELS, strict=True):
            await client.call("subscribe", {"channel": channel})
        await stream.until("stream-open")
        held = [{c.decode() for c in redis.client().pubsub_channels("realtime:c:shard-*")} for redis in sharded.redises]
        assert all(held) and not held[0] & held[1]  # each channel on one server, both servers used
        assert held[0] | held[1] == {f"realtime:c:{channel}" for channel in CHANNELS}
        for index, redis_held in enumerate(held):  # where REDIS_URL's order and crc32 put them
            assert redis_held == {f"realtime:c:{c}" for c in CHANNELS if shard_of(c) == index}
        async with httpx.AsyncClient() as http:
            for n, channel in enumerate(CHANNELS):  # published on the other process
                body = {"channel": channel, "message": {"content": n}}
                assert (await http.post(sharded.servers[1].http + "/ws/send-to-channel", json=body)).status_code == 202
        for n, client in enumerate(on_a):
            assert (await client.recv())["content"] == n
        assert sorted([(await stream.next_event())["data"]["content"] for _ in CHANNELS]) == list(range(8))
    finally:
        for client in on_a:
            await client.__aexit__(None, None, None)
        await stream.__aexit__(None, None, None)


async def test_one_redis_server_down_stops_only_its_channels_and_loses_no_persisted_message(sharded):
    down = sharded.redises[1]
    lost_for_a_while = next(channel for channel in CHANNELS if shard_of(channel) == 1)
    kept = [channel for channel in CHANNELS if shard_of(channel) == 0]
    subscriber = Subscriber(sharded.servers[0].ws + "/ws/connect", lost_for_a_while)
    until = time.monotonic() + 12
    task = asyncio.create_task(subscriber.run(until))
    await subscriber.ready.wait()
    publisher = asyncio.create_task(publish_steadily(sharded.servers[1].http, lost_for_a_while, 50 * 6, rate=50))
    await asyncio.sleep(1)
    down.stop()
    async with WSClient(sharded.servers[0].ws + "/ws/connect") as other:
        await other.call("subscribe", {"channel": kept[0]})
        async with httpx.AsyncClient() as http:
            body = {"channel": kept[0], "message": {"content": "still here"}}
            assert (await http.post(sharded.servers[1].http + "/ws/send-to-channel", json=body)).status_code == 202
        assert (await other.recv())["content"] == "still here"  # the other server's channels carry on
    await asyncio.sleep(3)
    down.start()
    offsets = await publisher
    await task
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    assert sorted(set(o for o in subscriber.offsets if offsets[0] <= o <= offsets[-1])) == offsets
