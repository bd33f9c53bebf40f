"""Gapless per-channel offsets on real PostgreSQL, with concurrent publishers in two daphne processes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from tests.streaming.test_recovery import replay_race
from tests.support.server import LiveServer, migrate
from tests.support.services import create_postgres_database, drop_postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.server]

PUBLISHERS = 24
PER_PUBLISHER = 25  # 600 persisted publishes


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    url = create_postgres_database()
    try:
        migrate(url)
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="module")
def servers(postgres_url) -> Iterator[list[LiveServer]]:
    env = {"CHANNEL_HISTORY_SIZE": "2000", "WEBSOCKET_MESSAGE_QUEUE_SIZE": "5000"}
    started = [LiveServer(postgres_url, **env), LiveServer(postgres_url, **env)]
    try:
        for server in started:
            server.start()
        yield started
    finally:
        for server in started:
            server.kill()


def rows(url: str, sql: str, *params) -> list[tuple]:
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as connection:
        cursor = connection.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


async def publish_concurrently(servers: list[LiveServer], channel: str, publishers: int, each: int) -> list[dict]:
    """`publishers` clients publish `each` persisted messages to `channel`, over both servers at once."""
    start = asyncio.Event()
    limits = httpx.Limits(max_connections=publishers * 2)

    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def publisher(index: int) -> list[dict]:
            server = servers[index % len(servers)]
            await start.wait()
            acks = []
            for n in range(each):
                body = {"channel": channel, "message": {"content": {"p": index, "n": n}}, "persist": True}
                response = await http.post(server.http + "/ws/send-to-channel", json=body)
                assert response.status_code == 202, response.text[:500]
                acks.append(response.json())
            return acks

        tasks = [asyncio.create_task(publisher(index)) for index in range(publishers)]
        await asyncio.sleep(0.05)
        start.set()
        return list(itertools.chain.from_iterable(await asyncio.gather(*tasks)))


async def test_concurrent_publishers_get_gapless_unique_offsets(servers, postgres_url):
    acks = await publish_concurrently(servers, "pg-gapless", PUBLISHERS, PER_PUBLISHER)
    total = PUBLISHERS * PER_PUBLISHER
    assert sorted(a["offset"] for a in acks) == list(range(1, total + 1))
    by_offset = {a["offset"]: a["id"] for a in acks}
    stored = rows(
        postgres_url,
        'SELECT "offset", message_id FROM streaming_channelmessage WHERE channel_name = %s ORDER BY "offset"',
        "pg-gapless",
    )
    assert stored == sorted(by_offset.items())
    (head,) = rows(postgres_url, "SELECT last_offset FROM streaming_channel WHERE name = %s", "pg-gapless")
    assert head == (total,)
    ((age,),) = rows(
        postgres_url,
        "SELECT max(now() - created_at) FROM streaming_channelmessage WHERE channel_name = %s",
        "pg-gapless",
    )
    assert timedelta(0) <= age < timedelta(minutes=5)  # stored as the time it was written, in UTC

    # the history API returns them in order, paged, from either server
    read, since = [], 0
    async with httpx.AsyncClient(timeout=10) as http:
        for page in itertools.count():
            server = servers[page % 2]
            body = (await http.get(f"{server.http}/api/channels/pg-gapless/history/?since={since}&limit=250")).json()
            assert body["recovered"] is True and body["offset"] == total
            read += body["messages"]
            if not body["has_more"]:
                break
            since = body["messages"][-1]["offset"]
    assert [m["offset"] for m in read] == list(range(1, total + 1))
    assert [m["id"] for m in read] == [by_offset[offset] for offset in range(1, total + 1)]


async def test_first_publish_race_on_brand_new_channels(servers, postgres_url):
    for channel in [f"pg-new-{n}" for n in range(6)]:
        acks = await publish_concurrently(servers, channel, 20, 1)
        assert sorted(a["offset"] for a in acks) == list(range(1, 21)), channel
        stored = rows(
            postgres_url,
            'SELECT "offset" FROM streaming_channelmessage WHERE channel_name = %s ORDER BY "offset"',
            channel,
        )
        assert [offset for (offset,) in stored] == list(range(1, 21))
        assert rows(postgres_url, "SELECT last_offset FROM streaming_channel WHERE name = %s", channel) == [(20,)]


async def test_replay_to_live_boundary_on_postgres(servers):
    assert await replay_race(servers[0], "pg-boundary") >= 20


async def test_a_reset_on_postgres_gives_a_new_epoch_and_idle_empty_heads_are_pruned(servers, postgres_url):
    import subprocess
    import sys

    from tests.support.server import ADMIN_HEADERS, ROOT, base_env

    await publish_concurrently(servers, "pg-reset", 2, 2)
    async with httpx.AsyncClient(timeout=10) as http:
        before = (await http.get(f"{servers[0].http}/api/channels/pg-reset/history/")).json()
        reset = await http.delete(f"{servers[1].http}/api/channels/pg-reset/history/", headers=ADMIN_HEADERS)
        assert reset.status_code == 200 and reset.json()["epoch"] != before["epoch"]
        acks = await publish_concurrently(servers, "pg-reset", 1, 1)
        assert [a["offset"] for a in acks] == [1]
        stale = (
            await http.get(f"{servers[0].http}/api/channels/pg-reset/history/?since=1&epoch={before['epoch']}")
        ).json()
        assert (stale["recovered"], stale["messages"], stale["epoch"]) == (False, [], reset.json()["epoch"])

    await publish_concurrently(servers, "pg-idle", 1, 2)
    rows(
        postgres_url,
        "UPDATE streaming_channelmessage SET created_at = now() - interval '3 days' WHERE channel_name = 'pg-idle'",
    )
    rows(
        postgres_url,
        "UPDATE streaming_channel SET updated_at = now() - interval '3 days' WHERE name IN ('pg-idle', 'pg-reset')",
    )
    code = "from streaming.history import history_expire, history_prune_heads; history_expire(); print(history_prune_heads())"
    pruned = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=base_env(postgres_url),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert pruned.stdout.splitlines()[-1] == "1"  # pg-reset still has its message: kept
    assert rows(postgres_url, "SELECT name FROM streaming_channel WHERE name IN ('pg-idle', 'pg-reset')") == [
        ("pg-reset",)
    ]
