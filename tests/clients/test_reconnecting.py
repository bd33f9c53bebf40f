"""Reconnection against real daphne processes: restarts, outages, fatal refusals, dead connections.

The clients talk to `restartable`, which is killed and restarted on the same port. Servers of one
module share one database, so `publisher` (another process) can persist messages while it is down.
"""

from __future__ import annotations

import signal
import time
import uuid

import httpx
import pytest
from realtime_client import (
    AuthenticationFailed,
    ClientState,
    ConnectFailed,
    ConnectionLost,
    ReconnectFailed,
    SSEClient,
    WebSocketClient,
    process_exception,
)

from tests.support.clients import without_epochs
from tests.support.polling import eventually, publish, refusals, token_for
from tests.support.server import ADMIN_HEADERS

pytestmark = pytest.mark.server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def restartable(live_server_factory):
    return live_server_factory()


@pytest.fixture(scope="module")
def publisher(live_server_factory):
    return live_server_factory()


@pytest.fixture(scope="module")
def short_history(live_server_factory):
    """Publishes like `publisher`, but keeps only the last 2 messages of a channel."""
    return live_server_factory(CHANNEL_HISTORY_SIZE="2")


@pytest.fixture(scope="module")
def beating(live_server_factory):
    """Heartbeats every second; a WebSocket client that sends nothing for 2 s is closed as idle."""
    return live_server_factory(
        WEBSOCKET_HEARTBEAT_INTERVAL="1", SSE_HEARTBEAT_INTERVAL="1", WEBSOCKET_DISCONNECT_TIMEOUT="2"
    )


def watch(client):
    """Record a client's disconnections and reconnections."""
    disconnects, reconnects = [], []
    client.on_disconnect(disconnects.append)
    client.on_reconnect(reconnects.append)
    return disconnects, reconnects


async def outage(server, clients, *lost):
    """Kill `server` and wait until each client's disconnection list (`lost`) has an entry."""
    server.kill()
    for disconnects in lost:
        await eventually(lambda d=disconnects: d, what="the disconnection")
    assert all(client.state is ClientState.CONNECTING for client in clients)


async def test_ws_client_recovers_what_was_published_during_an_outage_exactly_once(restartable, publisher, make_client):
    channel = unique("outage-ws")
    client = make_client(WebSocketClient, restartable, max_reconnect_attempts=50)
    received = []
    client.on_message("message")(received.append)
    disconnects, reconnects = watch(client)
    await client.connect()
    await client.subscribe_to_channel(channel)
    publish(restartable, channel, "before", persist=True)
    await eventually(lambda: len(received) == 1, what="the first message")
    first_connection = client.connection.connection_id

    await outage(restartable, [client], disconnects)
    for n in range(3):
        publish(publisher, channel, f"during {n}", persist=True)
    restartable.restart()

    await eventually(lambda: reconnects, timeout=10, what="the reconnection")
    publish(restartable, channel, "after", persist=True)
    await eventually(lambda: len(received) == 5, what="the missed messages and the live one")
    assert [envelope["content"] for envelope in received] == ["before", "during 0", "during 1", "during 2", "after"]
    assert [envelope["offset"] for envelope in received] == [1, 2, 3, 4, 5]
    assert reconnects[0].recovered == {channel: True} == client.recovery
    assert disconnects[0].reconnecting is True
    assert client.connection.connection_id != first_connection
    assert client.offsets == {channel: 5}


async def test_sse_client_resumes_from_the_last_event_id_after_an_outage(restartable, publisher, make_client):
    channel = unique("outage-sse")
    client = make_client(SSEClient, restartable, channels=[channel], max_reconnect_attempts=50)
    received = []
    client.on_event("message")(received.append)
    disconnects, reconnects = watch(client)
    await client.connect()
    publish(restartable, channel, "before", persist=True)
    await eventually(lambda: len(received) == 1, what="the first message")
    assert without_epochs(client.last_event_id) == f"{channel}:1"

    await outage(restartable, [client], disconnects)
    for n in range(3):
        publish(publisher, channel, f"during {n}", persist=True)
    restartable.restart()

    await eventually(lambda: reconnects, timeout=10, what="the reconnection")
    publish(restartable, channel, "after", persist=True)
    await eventually(lambda: len(received) == 5, what="the missed messages and the live one")
    assert [event["data"]["content"] for event in received] == ["before", "during 0", "during 1", "during 2", "after"]
    assert [without_epochs(event["id"]) for event in received] == [f"{channel}:{n}" for n in range(1, 6)]
    assert reconnects[0].recovered == {channel: True} == client.recovery


async def test_both_clients_report_a_gap_when_history_no_longer_reaches_back(restartable, short_history, make_client):
    channel = unique("gap")
    ws = make_client(WebSocketClient, restartable, max_reconnect_attempts=50)
    sse = make_client(SSEClient, restartable, channels=[channel], max_reconnect_attempts=50)
    ws_seen, sse_seen, resets = [], [], []
    ws.on_message("message")(ws_seen.append)
    sse.on_event("message")(sse_seen.append)
    sse.on_event("stream-reset")(resets.append)
    ws_lost, ws_back = watch(ws)
    sse_lost, sse_back = watch(sse)
    await ws.connect()
    await sse.connect()
    await ws.subscribe_to_channel(channel)
    publish(restartable, channel, "seen", persist=True)
    await eventually(lambda: ws_seen and sse_seen, what="the first message on both")

    await outage(restartable, [ws, sse], ws_lost, sse_lost)
    for n in range(3):  # offsets 2-4; only 3 and 4 are kept
        publish(short_history, channel, n, persist=True)
    restartable.restart()

    await eventually(lambda: ws_back and sse_back, timeout=10, what="both reconnections")
    assert ws_back[0].recovered == {channel: False}
    assert sse_back[0].recovered == {channel: False}
    assert resets[0]["data"] == {"channels": [channel]}


async def test_a_credential_refused_on_reconnect_stops_the_clients_without_retrying(live_server_factory, make_client):
    keyed = live_server_factory(WS_API_KEYS="client-api-key-1-5f0c2a9e7b")
    ws = make_client(WebSocketClient, keyed, api_key="client-api-key-1-5f0c2a9e7b", max_reconnect_attempts=50)
    sse = make_client(SSEClient, keyed, api_key="client-api-key-1-5f0c2a9e7b", max_reconnect_attempts=50)
    ws_errors, sse_errors = [], []
    ws.on_error(ws_errors.append)
    sse.on_error(sse_errors.append)
    await ws.connect()
    await sse.connect()

    keyed.kill()
    keyed.env["WS_API_KEYS"] = "client-api-key-2-9d41b6e08c"  # the key was revoked while the server was down
    keyed.restart()

    for client in (ws, sse):
        with pytest.raises(AuthenticationFailed):
            await client.wait_closed()
        assert client.state is ClientState.CLOSED
    assert (refusals(keyed, "ws"), refusals(keyed, "sse")) == (1, 1)
    await eventually(lambda: ws_errors and sse_errors, what="on_error")
    assert isinstance(ws_errors[-1].error, AuthenticationFailed) and ws_errors[-1].error.code == 4401
    assert isinstance(sse_errors[-1].error, AuthenticationFailed) and sse_errors[-1].error.code == 401


async def test_an_expired_token_ends_the_session_for_good(restartable, make_client):
    token = token_for(unique("brief"), exp=int(time.time()) + 2)
    ws = make_client(WebSocketClient, restartable, token=token)
    sse = make_client(SSEClient, restartable, token=token)
    ws_lost, _ = watch(ws)
    await ws.connect()
    await sse.connect()

    for client in (ws, sse):
        with pytest.raises(AuthenticationFailed):
            await client.wait_closed()
    await eventually(lambda: ws_lost, what="on_disconnect")
    assert (ws_lost[0].code, ws_lost[0].reconnecting) == (4401, False)
    assert sse.error.code == 4401  # the server's `stream-error` condition `unauthenticated`


async def test_clients_give_up_after_max_reconnect_attempts(live_server_factory, make_client):
    doomed = live_server_factory()
    options = {"reconnect_interval": 0.01, "max_reconnect_delay": 0.02, "max_reconnect_attempts": 3}
    ws = make_client(WebSocketClient, doomed, **options)
    sse = make_client(SSEClient, doomed, **options)
    await ws.connect()
    await sse.connect()

    doomed.kill()

    for client in (ws, sse):
        with pytest.raises(ReconnectFailed) as gave_up:
            await client.wait_closed()
        assert gave_up.value.attempts == 3
        assert isinstance(gave_up.value.last_error, ConnectFailed)
        assert client.state is ClientState.CLOSED


@pytest.mark.parametrize(("stable_after", "attempts"), [(0, [1, 1]), (60, [1, 2])], ids=["stable", "flapping"])
async def test_the_backoff_starts_over_only_after_a_stable_connection(restartable, make_client, stable_after, attempts):
    client = make_client(WebSocketClient, restartable, stable_after=stable_after)
    disconnects, reconnects = watch(client)
    await client.connect()

    for closed in (1, 2):  # an administrator closes the connection twice (close code 4409, retried)
        response = httpx.delete(
            f"{restartable.http}/ws/connections/{client.connection.connection_id}", headers=ADMIN_HEADERS
        )
        assert response.status_code == 204
        await eventually(lambda n=closed: len(reconnects) == n, what=f"reconnection {closed}")

    assert [context.code for context in disconnects] == [4409, 4409]
    assert [context.attempts for context in reconnects] == attempts


async def test_a_full_server_is_a_retryable_failure(live_server_factory, make_client):
    full = live_server_factory(WEBSOCKET_MAX_CONNECTIONS="1", SSE_MAX_CONNECTIONS="1")
    await make_client(WebSocketClient, full).connect()
    await make_client(SSEClient, full).connect()

    with pytest.raises(ConnectFailed) as ws_refused:
        await make_client(WebSocketClient, full).connect()
    with pytest.raises(ConnectFailed) as sse_refused:
        await make_client(SSEClient, full).connect()

    assert ws_refused.value.code == 1013
    assert (sse_refused.value.code, sse_refused.value.retry_after) == (503, 3.0)
    assert process_exception(ws_refused.value) is None and process_exception(sse_refused.value) is None


def stop_when_closed_by_an_administrator(error):
    return error if error.code == 4409 else None


@pytest.mark.parametrize(
    "options",
    [{"auto_reconnect": False}, {"process_exception": stop_when_closed_by_an_administrator}],
    ids=["auto_reconnect-off", "custom-process_exception"],
)
async def test_a_client_told_not_to_retry_closes_with_the_error(restartable, make_client, options):
    client = make_client(WebSocketClient, restartable, **options)
    disconnects, _ = watch(client)
    await client.connect()

    httpx.delete(f"{restartable.http}/ws/connections/{client.connection.connection_id}", headers=ADMIN_HEADERS)

    with pytest.raises(ConnectionLost) as closed:
        await client.wait_closed()
    assert closed.value.code == 4409
    assert client.state is ClientState.CLOSED
    await eventually(lambda: disconnects, what="on_disconnect")
    assert disconnects[0].reconnecting is False


async def test_heartbeats_are_answered_so_an_idle_client_stays_connected(beating, make_client):
    ws = make_client(WebSocketClient, beating)
    sse = make_client(SSEClient, beating)
    ws_beats, sse_beats = [], []
    ws.on_message("heartbeat")(ws_beats.append)
    sse.on_event("heartbeat")(sse_beats.append)
    ws_lost, _ = watch(ws)
    await ws.connect()
    await sse.connect()

    # Past the server's 2 s idle limit: only the client's automatic pongs keep the socket open.
    await eventually(lambda: len(ws_beats) >= 3 and len(sse_beats) >= 3, timeout=6, what="three heartbeats")

    assert ws_lost == []
    assert ws.state is ClientState.CONNECTED and sse.state is ClientState.CONNECTED
    assert ws.connection.heartbeat_interval == sse.connection.heartbeat_interval == 1


async def test_a_server_that_falls_silent_is_detected_and_reconnected(beating, make_client):
    ws = make_client(WebSocketClient, beating, open_timeout=5)
    sse = make_client(SSEClient, beating, open_timeout=5)
    ws_lost, ws_back = watch(ws)
    sse_lost, sse_back = watch(sse)
    await ws.connect()
    await sse.connect()

    beating.process.send_signal(signal.SIGSTOP)  # the TCP connections stay open; nothing arrives
    try:
        frozen = time.monotonic()
        await eventually(lambda: ws_lost and sse_lost, timeout=5, what="silence detection")
        noticed_after = time.monotonic() - frozen
    finally:
        beating.process.send_signal(signal.SIGCONT)

    assert 1.0 <= noticed_after < 4.0  # two heartbeat intervals, not the OS's TCP timeouts
    assert "two heartbeats" in ws_lost[0].reason and "two heartbeats" in sse_lost[0].reason
    assert ws_lost[0].reconnecting and sse_lost[0].reconnecting
    await eventually(lambda: ws_back and sse_back, timeout=10, what="both reconnections")
    assert await ws.ping() > 0
