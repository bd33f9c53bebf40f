"""Stream epochs with the Python clients against real daphne processes: a history reset by the
admin API seen live, a resumption across a reset (not recovered, nothing replayed under old
offsets), server-side channels from a token's `subs` claim, and presence counts.

`restartable` is killed and restarted; `publisher` (another process on the same database) resets
and publishes while it is down.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from realtime_client import ResetContext, SSEClient, WebSocketClient

from tests.support.polling import eventually, publish, token_for
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


def reset_history(server, channel: str) -> str:
    """Reset a channel's history with the admin API; returns the new epoch."""
    response = httpx.delete(f"{server.http}/api/channels/{channel}/history/", headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["channel"], body["offset"]) == (channel, 0)
    return body["epoch"]


def watch(client):
    """Record a client's resets, reconnections and delivered contents."""
    resets, reconnects, received = [], [], []
    client.on_reset(resets.append)
    client.on_reconnect(reconnects.append)
    if isinstance(client, WebSocketClient):
        client.on_message("message")(lambda envelope: received.append(envelope["content"]))
    else:
        client.on_event("message")(lambda event: received.append(event["data"]["content"]))
    return resets, reconnects, received


def spy_subscribes(client: WebSocketClient) -> list[dict]:
    """The data of every `subscribe` the client sends."""
    sent: list[dict] = []
    request = client.request

    async def recording(action, data=None, **options):
        if action == "subscribe":
            sent.append(dict(data))
        return await request(action, data, **options)

    client.request = recording
    return sent


async def test_both_clients_see_a_live_history_reset_and_go_on_in_the_new_epoch(restartable, make_client):
    channel = unique("reset-live")
    ws = make_client(WebSocketClient, restartable)
    sse = make_client(SSEClient, restartable, channels=[channel])
    ws_resets, _, ws_seen = watch(ws)
    sse_resets, _, sse_seen = watch(sse)
    frames, events = [], []
    ws.on_message("stream-reset")(frames.append)
    sse.on_event("stream-reset")(events.append)
    await ws.connect()
    await ws.subscribe_to_channel(channel)
    await sse.connect()
    for n in (1, 2):
        publish(restartable, channel, f"m{n}", persist=True)
    await eventually(lambda: len(ws_seen) == len(sse_seen) == 2, what="the first messages")
    old_epoch = sse.positions[channel][1]
    assert sse.positions[channel] == (2, old_epoch) and old_epoch

    epoch = reset_history(restartable, channel)

    await eventually(lambda: ws_resets and sse_resets, what="both resets")
    assert epoch != old_epoch
    assert ws_resets == sse_resets == [ResetContext(channel, epoch, 0, resumed=False)]
    assert (ws.offsets, ws.epochs) == ({channel: 0}, {channel: epoch})
    assert sse.positions[channel] == (0, epoch)
    await eventually(lambda: frames and events, what="the frame and the event reaching handlers")
    assert frames[0]["content"] == {"channel": channel, "epoch": epoch, "offset": 0}
    assert events[0]["data"] == {"channels": [channel]}

    publish(restartable, channel, "after", persist=True)
    await eventually(lambda: len(ws_seen) == len(sse_seen) == 3, what="the first message of the new epoch")
    assert ws_seen == sse_seen == ["m1", "m2", "after"]
    assert ws.offsets == {channel: 1}
    assert sse.positions[channel] == (1, epoch)


async def test_clients_resuming_across_a_reset_are_not_recovered_and_get_nothing_under_old_offsets(
    restartable, publisher, make_client
):
    channel = unique("reset-away")
    publish(restartable, channel, "m1", persist=True)  # the channel has an epoch before the subscribe
    ws = make_client(WebSocketClient, restartable, max_reconnect_attempts=50)
    sse = make_client(SSEClient, restartable, channels=[channel], max_reconnect_attempts=50)
    ws_resets, ws_back, ws_seen = watch(ws)
    sse_resets, sse_back, sse_seen = watch(sse)
    lost = []
    ws.on_disconnect(lost.append)
    sse.on_disconnect(lost.append)
    subscribes = spy_subscribes(ws)
    await ws.connect()
    reply = await ws.subscribe_to_channel(channel)
    old_epoch = reply["epoch"]
    assert old_epoch
    await sse.connect()
    publish(restartable, channel, "m2", persist=True)
    await eventually(lambda: len(ws_seen) == len(sse_seen) == 2, what="the messages before the outage")
    assert (ws.offsets, ws.epochs) == ({channel: 2}, {channel: old_epoch})
    assert sse.positions[channel] == (2, old_epoch)

    restartable.kill()
    await eventually(lambda: len(lost) == 2, what="both disconnections")
    epoch = reset_history(publisher, channel)
    for n in (1, 2, 3):  # offsets 1-3 of the new epoch: past the clients' old offset 2
        publish(publisher, channel, f"new {n}", persist=True)
    restartable.restart()

    await eventually(lambda: ws_back and sse_back, timeout=10, what="both reconnections")
    assert subscribes[-1] == {"channel": channel, "since": 2, "epoch": old_epoch}
    assert ws_back[0].recovered == {channel: False} == ws.recovery
    assert sse_back[0].recovered == {channel: False} == sse.recovery
    assert ws_resets == sse_resets == [ResetContext(channel, epoch, 3, resumed=True)]
    assert (ws.offsets, ws.epochs) == ({channel: 3}, {channel: epoch})
    assert sse.positions[channel] == (3, epoch)
    await asyncio.sleep(0.3)  # anything replayed would have arrived by now
    assert ws_seen == sse_seen == ["m1", "m2"], "no message replayed under the old offsets"

    publish(restartable, channel, "live", persist=True)
    await eventually(lambda: len(ws_seen) == len(sse_seen) == 3, what="the next live message")
    assert ws_seen[-1] == sse_seen[-1] == "live"
    assert ws.offsets == {channel: 4}
    assert sse.positions[channel] == (4, epoch)


async def test_server_side_channels_of_a_subs_claim_deliver_without_a_subscribe(live_server, make_client):
    channel, user = unique("feed"), unique("sub")
    token = token_for(user, subs=[channel])
    ws = make_client(WebSocketClient, live_server, token=token)
    sse = make_client(SSEClient, live_server, token=token)
    _, ws_back, ws_seen = watch(ws)
    _, _, sse_seen = watch(sse)
    await ws.connect()
    await sse.connect()

    assert ws.connection.server_channels == ws.server_channels == ws.channels == [channel]
    assert sse.connection.server_channels == sse.server_channels == [channel]
    assert sse.channels == []  # nothing asked for: the server added it
    publish(live_server, channel, "pushed", persist=True)
    await eventually(lambda: ws_seen == sse_seen == ["pushed"], what="delivery on the server-side channel")
    assert ws.offsets == {channel: 1}

    # A server-side channel is resumed from its position like a subscribed one.
    closed = httpx.delete(f"{live_server.http}/ws/connections/{ws.connection.connection_id}", headers=ADMIN_HEADERS)
    assert closed.status_code == 204
    await eventually(lambda: ws_back, what="the reconnection")
    assert ws_back[0].recovered == {channel: True}
    assert ws.channels == [channel]

    counts = await ws.presence(channel, counts_only=True)
    assert counts == {"channel": channel, "connections": 2, "user_count": 1}
    full = await ws.presence(channel)
    assert (full["connections"], full["user_count"], full["users"]) == (2, 1, [user])
