"""The connection registry: batched rows, process heartbeats, reaping, the manager API."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from streaming import connection_manager
from streaming.models import Connection, ServerProcess, Subscription
from streaming.registry_rows import reap_dead_processes
from tests.support.clients import WSClient
from tests.support.consumers import request

pytestmark = pytest.mark.django_db(transaction=True)


async def test_flush_writes_connection_channels_and_close(connect):
    from streaming.runtime import get_runtime

    communicator = await connect("", headers=[(b"user-agent", b"pytest-agent")])
    connection_id = communicator.greeting["data"]["connection_id"]
    await request(communicator, "subscribe", {"channel": "alpha"}, skip=True)
    await request(communicator, "subscribe", {"channel": "beta"}, skip=True)
    registry = get_runtime().registry
    await registry.flush()
    row = await Connection.objects.aget(id=connection_id)
    assert row.transport == "ws" and row.closed_at is None and row.user_agent == "pytest-agent"
    assert row.process_id == registry.process_id
    channels = [
        s async for s in Subscription.objects.filter(connection_id=connection_id).values_list("channel", flat=True)
    ]
    assert sorted(channels) == ["alpha", "beta"]
    process = await ServerProcess.objects.aget(id=registry.process_id)
    assert process.bus_channel == registry.bus_channel and process.stopped_at is None
    await request(communicator, "unsubscribe", {"channel": "alpha"}, skip=True)
    await registry.flush()
    channels = [
        s async for s in Subscription.objects.filter(connection_id=connection_id).values_list("channel", flat=True)
    ]
    assert channels == ["beta"]
    await communicator.disconnect()
    await registry.flush()
    row = await Connection.objects.aget(id=connection_id)
    assert row.closed_at is not None and row.close_code == 1000
    assert not await Subscription.objects.filter(connection_id=connection_id).aexists()


async def test_last_seen_is_written_in_batches_not_per_frame(connect, realtime):
    from streaming.runtime import get_runtime

    realtime(registry_flush_interval=3600)  # only explicit flushes below
    communicator = await connect()
    connection_id = communicator.greeting["data"]["connection_id"]
    registry = get_runtime().registry
    await registry.flush()
    before = (await Connection.objects.aget(id=connection_id)).last_seen
    await asyncio.sleep(0.01)
    for _ in range(50):
        await request(communicator, "ping", skip=True)
    assert (await Connection.objects.aget(id=connection_id)).last_seen == before  # nothing written per frame
    await registry.flush()
    assert (await Connection.objects.aget(id=connection_id)).last_seen > before  # one batched write
    await communicator.disconnect()


def _stale_process(process_id: str, age_seconds: float) -> ServerProcess:
    now = timezone.now()
    process = ServerProcess.objects.create(
        id=process_id,
        bus_channel="x",
        hostname="h",
        pid=1,
        started_at=now,
        last_heartbeat=now - timedelta(seconds=age_seconds),
    )
    for n in range(3):
        connection = Connection.objects.create(
            id=f"{process_id}-{n}", transport="ws", process=process, connected_at=now, last_seen=now
        )
        connection.subscriptions.create(channel="news")
    return process


@pytest.mark.django_db
def test_reap_closes_connections_of_dead_processes_only():
    _stale_process("dead", 600)
    _stale_process("alive", 1)
    assert len(reap_dead_processes(60)) == 3
    assert Connection.objects.filter(process_id="dead", closed_at__isnull=True).count() == 0
    assert set(Connection.objects.filter(process_id="dead").values_list("close_code", flat=True)) == {1006}
    assert Connection.objects.filter(process_id="alive", closed_at__isnull=True).count() == 3
    assert ServerProcess.objects.get(id="dead").stopped_at is not None
    assert not Subscription.objects.filter(connection__process_id="dead").exists()
    assert reap_dead_processes(60) == []


@pytest.mark.django_db
def test_cleanup_connections_command():
    _stale_process("gone", 600)
    out = StringIO()
    call_command("cleanup_connections", stdout=out)
    assert out.getvalue().strip() == "closed 3 connection(s) of dead server processes"
    assert not Connection.objects.filter(closed_at__isnull=True).exists()


async def test_connection_manager_api(connect, realtime):
    from notifications.messages import NotificationMessage
    from notifications.models import Notification
    from streaming.auth import authenticator

    token = authenticator.create_access_token({"sub": "user123"})
    user, watcher = await connect(f"token={token}"), await connect()
    await request(watcher, "subscribe", {"channel": "important_updates"}, skip=True)
    published = await connection_manager.broadcast_to_channel(
        "important_updates", {"type": "update", "content": {"v": 2}}, persist=True
    )
    assert published.offset == 1
    envelope = await watcher.receive_json_from(timeout=3)
    assert envelope["type"] == "update" and envelope["offset"] == 1
    await connection_manager.broadcast_to_all("plain content")
    for communicator in (user, watcher):
        assert (await communicator.receive_json_from(timeout=3))["content"] == "plain content"
    notification = NotificationMessage(
        title="Обновление системы",
        content="Система будет недоступна с 22:00 до 23:00",
        type="warning",
        auto_hide=False,
        duration=10000,
    )
    await connection_manager.send_to_user("user123", notification)
    delivered = await user.receive_json_from(timeout=3)
    assert delivered["type"] == "notification" and delivered["channel"] == "user:user123"
    assert delivered["content"]["title"] == "Обновление системы" and delivered["content"]["auto_hide"] is False
    assert await Notification.objects.filter(user_id="user123").aexists()
    assert await watcher.receive_nothing(timeout=0.2)
    stats = await connection_manager.get_stats()
    assert stats["websocket"]["total"] == 2 and stats["websocket"]["users"] == 1
    assert stats["channels"] == {"total": 1, "subscriptions": 1}
    realtime(websocket_disconnect_timeout=0.01)
    await asyncio.sleep(0.05)
    assert await connection_manager.cleanup_inactive_connections() >= 2
    closed = await user.receive_output(timeout=3)
    assert closed["type"] == "websocket.close" and closed["code"] == 4408


@pytest.mark.server
async def test_killed_process_leaves_no_ghosts(live_server_factory):
    env = {"WEBSOCKET_DISCONNECT_TIMEOUT": "2", "WEBSOCKET_HEARTBEAT_INTERVAL": "0.5"}
    doomed, survivor = live_server_factory(**env), live_server_factory(**env)
    ghost = await WSClient(doomed.ws + "/ws/connect").__aenter__()
    async with WSClient(survivor.ws + "/ws/connect") as keeper:
        await ghost.call("subscribe", {"channel": "haunted"})
        await keeper.call("subscribe", {"channel": "haunted"})
        async with httpx.AsyncClient() as http:
            await asyncio.sleep(0.5)
            assert (await http.get(survivor.http + "/ws/stats")).json()["websocket"]["total"] == 2
            doomed.kill()  # SIGKILL: no chance to close its rows
            killed_at = time.monotonic()
            while (await http.get(survivor.http + "/ws/stats")).json()["websocket"]["total"] != 1:
                assert time.monotonic() - killed_at < 4, "ghost still counted after 2 x WEBSOCKET_DISCONNECT_TIMEOUT"
                await keeper.socket.send('{"action": "pong"}')  # stay active (idle close is 2 s)
                await asyncio.sleep(0.2)
            ghost_id = ghost.greeting["data"]["connection_id"]
            database = sqlite3.connect(survivor.database_url.removeprefix("sqlite:///"))
            while (
                database.execute("select closed_at from streaming_connection where id = ?", (ghost_id,)).fetchone()[0]
                is None
            ):
                assert time.monotonic() - killed_at < 4, "ghost row not reaped within 2 x WEBSOCKET_DISCONNECT_TIMEOUT"
                await keeper.socket.send('{"action": "pong"}')
                await asyncio.sleep(0.2)
            presence = await keeper.call("presence", {"channel": "haunted"})
            assert presence["content"]["connections"] == 1


async def test_a_refused_row_does_not_fail_the_rest_of_the_batch(connect, realtime):
    from streaming.runtime import get_runtime

    realtime(registry_flush_interval=3600)  # only explicit flushes below
    communicator = await connect()
    connection_id = communicator.greeting["data"]["connection_id"]
    await request(communicator, "subscribe", {"channel": "kept"}, skip=True)
    registry = get_runtime().registry
    # A subscription row of a connection that has no row: the database refuses it (foreign key).
    registry._pending.channels["no-such-connection"] = ["orphan"]
    await registry.flush()
    row = await Connection.objects.aget(id=connection_id)
    assert row.closed_at is None
    assert [s async for s in Subscription.objects.values_list("channel", flat=True)] == ["kept"]
    assert registry.health() is None
    await request(communicator, "subscribe", {"channel": "later"}, skip=True)
    await registry.flush()  # the refused row was dropped, not retried forever
    assert sorted([s async for s in Subscription.objects.values_list("channel", flat=True)]) == ["kept", "later"]
    await communicator.disconnect()


async def test_a_process_reaped_while_alive_restores_its_rows(connect, realtime):
    from streaming.runtime import get_runtime

    realtime(registry_flush_interval=3600)
    communicator = await connect()
    connection_id = communicator.greeting["data"]["connection_id"]
    await request(communicator, "subscribe", {"channel": "room"}, skip=True)
    registry = get_runtime().registry
    await registry.flush()
    # A peer saw no heartbeat for a while (a database outage, a long pause) and reaped us.
    await ServerProcess.objects.filter(id=registry.process_id).aupdate(
        last_heartbeat=timezone.now() - timedelta(seconds=600)
    )
    from channels.db import database_sync_to_async

    assert len(await database_sync_to_async(reap_dead_processes)(60)) == 1
    assert (await connection_manager.get_stats())["websocket"]["total"] == 0
    registry._next_heartbeat = 0.0
    await registry.flush()  # our heartbeat finds the process stopped: it clears that, then writes again
    await registry.flush()
    assert (await ServerProcess.objects.aget(id=registry.process_id)).stopped_at is None
    row = await Connection.objects.aget(id=connection_id)
    assert row.closed_at is None and row.close_code is None
    stats = await connection_manager.get_stats()
    assert stats["websocket"]["total"] == 1 and stats["channels"] == {"total": 1, "subscriptions": 1}
    await communicator.disconnect()


async def test_healthz_reports_a_registry_that_cannot_flush(connect, realtime, client):
    from channels.db import database_sync_to_async
    from django.db import connection as db

    from streaming.runtime import get_runtime

    realtime(registry_flush_interval=0.1)
    communicator = await connect()
    registry = get_runtime().registry
    await registry.flush()

    def break_table() -> None:
        with db.cursor() as cursor:
            cursor.execute("ALTER TABLE streaming_serverprocess RENAME TO streaming_serverprocess_away")

    def mend_table() -> None:
        with db.cursor() as cursor:
            cursor.execute("ALTER TABLE streaming_serverprocess_away RENAME TO streaming_serverprocess")

    await database_sync_to_async(break_table)()
    try:
        await request(communicator, "subscribe", {"channel": "x"}, skip=True)
        deadline = time.monotonic() + 5
        while registry.health() is None:
            assert time.monotonic() < deadline, "the failing registry was never reported"
            await asyncio.sleep(0.1)
        response = await database_sync_to_async(client.get)("/healthz")
        assert response.status_code == 503
        assert response.json()["checks"]["registry"].startswith("error: registry writes failing")
    finally:
        await database_sync_to_async(mend_table)()
    deadline = time.monotonic() + 5
    while registry.health() is not None:
        assert time.monotonic() < deadline, "the registry did not recover"
        await asyncio.sleep(0.1)
    assert (await database_sync_to_async(client.get)("/healthz")).status_code == 200
    await communicator.disconnect()


@pytest.mark.django_db
def test_closed_connections_and_stopped_processes_are_pruned_after_the_retention():
    from streaming.registry_rows import prune_closed_connections

    now = timezone.now()
    old = _stale_process("old", 600)
    old.stopped_at = now - timedelta(days=3)
    old.save()
    Connection.objects.filter(process=old).update(closed_at=now - timedelta(days=3), close_code=1000)
    live = _stale_process("live", 1)
    Connection.objects.filter(id="live-0").update(closed_at=now - timedelta(minutes=5), close_code=1000)
    assert prune_closed_connections(86400) == 3
    assert not ServerProcess.objects.filter(id="old").exists()
    assert set(Connection.objects.values_list("id", flat=True)) == {"live-0", "live-1", "live-2"}
    assert ServerProcess.objects.filter(id=live.id).exists()


async def test_only_connections_whose_time_has_come_are_ticked(connect, realtime, monkeypatch):
    from streaming.lifecycle import ClientConnection

    realtime(websocket_heartbeat_interval=30, websocket_disconnect_timeout=60, registry_flush_interval=0.1)
    ticked = []
    real_tick = ClientConnection.tick
    monkeypatch.setattr(ClientConnection, "tick", lambda self, now: ticked.append(self) or real_tick(self, now))
    quiet = [await connect() for _ in range(20)]
    soon = await connect(f"token={authenticator_token('soon', seconds=2)}")
    await asyncio.sleep(2.5)
    soon_id = soon.greeting["data"]["connection_id"]
    assert {connection.connection_id for connection in ticked} == {soon_id}  # the 20 quiet ones: untouched
    closed = await soon.receive_output(timeout=3)
    assert closed["code"] == 4401  # its token expired on time
    for communicator in quiet:
        await communicator.disconnect()


def authenticator_token(user_id: str, seconds: int) -> str:
    import jwt
    from django.conf import settings as django_settings

    payload = {
        "token_type": "access",
        "exp": int(time.time()) + seconds,
        "iat": int(time.time()),
        "jti": user_id,
        "sub": user_id,
    }
    return jwt.encode(payload, django_settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS256")
