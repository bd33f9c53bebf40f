"""The classes of defect an outside probe found, kept covered against real processes.

PostgreSQL + Redis, two processes: input guarded by a pattern is matched in full (a trailing
newline once poisoned a process's registry); a process keeps answering while a client tries
that; SSE streams that stop reading are ended and dropped within bounded memory; a body over
the limit is refused before it is read; a token refresh reads the user's role as it is now; log
redaction reads parameter names decoded, as the server does. docs/RELIABILITY.md quotes the
figures.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid

import httpx
import pytest

from tests.support.clients import WSClient
from tests.support.processes import rss_bytes
from tests.support.server import ADMIN_HEADERS, LiveServer, migrate
from tests.support.services import PrivateRedis, create_postgres_database, drop_postgres_database

pytestmark = [pytest.mark.server, pytest.mark.postgres, pytest.mark.redis]

MB = 1024 * 1024


@pytest.fixture(scope="module")
def pair():
    """Two daphne processes on PostgreSQL and Redis, as in production."""
    redis = PrivateRedis().start()
    database = create_postgres_database()
    migrate(database)
    servers = [LiveServer(database, REDIS_URL=redis.url, WEBSOCKET_DISCONNECT_TIMEOUT="4").start() for _ in range(2)]
    yield servers
    for server in servers:
        server.kill()
    redis.stop()
    drop_postgres_database(database)


# ---------------------------------------------------------------------------------------------
# Patterns are matched in full, on every way in


NEWLINE_NAME = "a" * 100 + "\n"


async def test_every_pattern_guarded_input_refuses_a_trailing_newline(pair, figure):
    a, _ = pair
    refused = {}
    async with WSClient(a.ws + "/ws/connect") as ws, httpx.AsyncClient(timeout=5) as http:
        frames = {
            "ws subscribe channel": ("subscribe", {"channel": NEWLINE_NAME}),
            "ws send_to_channel channel": ("send_to_channel", {"channel": "news\n", "content": 1}),
            "ws send_to_channel type": ("send_to_channel", {"channel": "news", "content": 1, "type": "notification\n"}),
            "ws send_to_user user_id": ("send_to_user", {"user_id": "alice\n", "content": 1}),
            "ws history channel": ("history", {"channel": "news\n"}),
            "ws presence channel": ("presence", {"channel": "news\n"}),
        }
        for name, (action, data) in frames.items():
            reply = await ws.call(action, data)
            refused[name] = reply["type"] == "error" and reply["content"]["type"] in (
                "invalid_channel",
                "invalid_message",
            )
        bodies = {
            "api channel": ("/ws/send-to-channel", {"channel": "news\n", "message": {"content": 1}}),
            "api type": ("/ws/send-to-channel", {"channel": "news", "message": {"content": 1, "type": "error\n"}}),
            "api user_id": ("/ws/send-to-user", {"user_id": "alice\n", "message": {"content": 1}}),
            "api sse event": ("/sse/send-to-channel", {"channel": "news", "event": "stream-open\n", "data": 1}),
            "api batch channel": ("/api/publish/batch/", {"messages": [{"channel": "x\n", "message": {"content": 1}}]}),
        }
        for name, (path, body) in bodies.items():
            refused[name] = (await http.post(a.http + path, json=body)).status_code == 400
        for name, query in {"sse channel": "channel=" + "a" * 100 + "%0A", "sse channels": "channels=news%0A"}.items():
            refused[name] = (await http.get(a.http + "/sse/connect?" + query)).status_code == 400
        refused["api connections filter"] = (
            await http.get(a.http + "/ws/connections?user_id=alice%0A", headers=ADMIN_HEADERS)
        ).status_code == 400
    figure(inputs=len(refused), refused=sum(refused.values()))
    assert all(refused.values()), [name for name, ok in refused.items() if not ok]


async def test_a_client_trying_poisoned_names_harms_no_process(pair, figure):
    """Once, a 101-character subscription row failed every registry flush of its process: stats
    and lists answered 500 and the process was reaped by its peer while still serving."""
    a, b = pair
    async with WSClient(a.ws + "/ws/connect") as attacker, WSClient(a.ws + "/ws/connect") as victim:
        await victim.call("subscribe", {"channel": "kept"})
        for _ in range(20):
            await attacker.call("subscribe", {"channel": NEWLINE_NAME})
        for _ in range(6):  # past the liveness window of 4 s: a stuck process would be reaped by now
            for client in (attacker, victim):
                await client.socket.send('{"action": "pong"}')  # alive (idle connections close at 4 s)
            await asyncio.sleep(1)
        victim_id = victim.greeting["data"]["connection_id"]
        statuses = {}
        async with httpx.AsyncClient(timeout=5) as http:
            for server in (a, b):
                for path in ("/ws/stats", "/ws/connections", "/api/channels/kept/", "/healthz"):
                    response = await http.get(server.http + path, headers=ADMIN_HEADERS)
                    statuses[f"{server.port}{path}"] = response.status_code
                listed = (await http.get(server.http + "/ws/connections?channel=kept", headers=ADMIN_HEADERS)).json()
                assert [c["id"] for c in listed["results"]] == [victim_id]
        presence = await victim.call("presence", {"channel": "kept"})
    figure(endpoints_checked=len(statuses), non_200=sum(code != 200 for code in statuses.values()))
    assert set(statuses.values()) == {200}, statuses
    assert presence["content"]["connections"] == 1


# ---------------------------------------------------------------------------------------------
# SSE streams that stop reading


@pytest.mark.reliability
@pytest.mark.timeout(300)
async def test_stalled_sse_streams_are_dropped_within_bounded_memory(live_server_factory, figure):
    streams, size, queue = 50, 60_000, 20
    server = live_server_factory(WEBSOCKET_MESSAGE_QUEUE_SIZE=str(queue), SLOW_CONSUMER_TIMEOUT="2")
    pid = server.process.pid
    baseline = rss_bytes(pid)
    stalled = []
    for _ in range(streams):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"GET /sse/connect?channels=flood HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        stalled.append(sock)
    body = {"channel": "flood", "message": {"content": "x" * size}}
    peak, started, ended_after = baseline, time.monotonic(), None
    async with httpx.AsyncClient(timeout=10) as http:
        while time.monotonic() - started < 120:
            assert (await http.post(server.http + "/ws/send-to-channel", json=body)).status_code == 202
            peak = max(peak, rss_bytes(pid))
            if (await http.get(server.http + "/ws/stats")).json()["sse"]["total"] == 0:
                ended_after = time.monotonic() - started
                break
    dropped = 0
    for sock in stalled:
        sock.settimeout(5)
        try:
            while sock.recv(1 << 20):
                pass
            dropped += 1
        except OSError:
            dropped += 1
        sock.close()
    bound = streams * (queue * size + 2 * MB) + 20 * MB  # each: its outbox and the socket buffer
    figure(streams=streams, ended_after_s=ended_after and round(ended_after, 1), sockets_closed=dropped,
           rss_growth_mb=round((peak - baseline) / MB, 1), bound_mb=round(bound / MB, 1))  # fmt: skip
    assert ended_after is not None, "stalled streams kept their slots"
    assert dropped == streams
    assert peak - baseline < bound


# ---------------------------------------------------------------------------------------------
# Bodies over the limit, refused before they are read


def test_a_300_mb_body_is_refused_before_it_is_sent(pair, figure):
    a, _ = pair
    pid = a.process.pid
    before = rss_bytes(pid)
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", a.port), timeout=5)
    sock.sendall(
        b"POST /ws/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 314572800\r\n\r\n" + b"x" * 65536
    )
    answer = sock.recv(4096)
    answered_after = time.monotonic() - started
    sock.close()
    figure(answered_after_ms=round(answered_after * 1000, 1), rss_growth_mb=round((rss_bytes(pid) - before) / MB, 1))
    assert answer.startswith(b"HTTP/1.1 413")
    assert answered_after < 1.0
    assert rss_bytes(pid) - before < 16 * MB


# ---------------------------------------------------------------------------------------------
# A refresh reads the role as it is now


def test_a_demoted_staff_users_refresh_is_not_an_admin(pair):
    import subprocess
    import sys

    from tests.support.server import ROOT

    a, _ = pair
    name = "staff-" + uuid.uuid4().hex[:8]
    make = f"from django.contrib.auth.models import User; User.objects.create_user({name!r}, password='pw-123456789', is_staff=True)"
    subprocess.run([sys.executable, "manage.py", "shell", "-c", make], cwd=ROOT, env=a.env, check=True)
    pair_of = httpx.post(a.http + "/api/token/", json={"username": name, "password": "pw-123456789"}).json()
    demote = (
        f"from django.contrib.auth.models import User; User.objects.filter(username={name!r}).update(is_staff=False)"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", demote], cwd=ROOT, env=a.env, check=True)
    refreshed = httpx.post(a.http + "/api/token/refresh/", json={"refresh": pair_of["refresh"]}).json()["access"]
    claims = json.loads(_b64decode(refreshed.split(".")[1]))
    assert claims["role"] == "user"
    assert httpx.get(a.http + "/ws/connections", headers={"Authorization": f"Bearer {refreshed}"}).status_code == 403
    remove = f"from django.contrib.auth.models import User; User.objects.filter(username={name!r}).delete()"
    subprocess.run([sys.executable, "manage.py", "shell", "-c", remove], cwd=ROOT, env=a.env, check=True)
    gone = httpx.post(a.http + "/api/token/refresh/", json={"refresh": pair_of["refresh"]})
    assert gone.status_code == 401


def _b64decode(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# ---------------------------------------------------------------------------------------------
# Redaction by the name the server reads


async def test_encoded_credential_names_are_redacted_in_the_access_log(pair):
    a, _ = pair
    marker = "probe-" + uuid.uuid4().hex
    async with httpx.AsyncClient() as http:
        for query in (f"api%5Fkey={marker}", f"%74oken={marker}", f"%74%6Fken={marker}&channels=x"):
            await http.get(a.http + "/ws/stats?" + query)
            assert (await http.get(a.http + "/sse/connect?" + query, timeout=5)).status_code == 401
    await asyncio.sleep(0.5)
    assert marker not in a.log()
