"""Per-connection rate limiting (CLIENT_RATE_LIMIT, CLIENT_RATE_BURST) and the 4429 abuse rule."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from streaming import limits
from streaming.limits import TokenBucket

pytestmark = pytest.mark.django_db(transaction=True)


# ---------------------------------------------------------------------------------------------
# The bucket, with injected time


def test_bucket_allows_burst_then_refuses():
    bucket = TokenBucket(rate=5, burst=3)
    assert [bucket.take(now=bucket.updated) for _ in range(5)] == [True, True, True, False, False]


def test_bucket_refills_at_rate_up_to_burst():
    bucket = TokenBucket(rate=10, burst=3)
    start = bucket.updated
    for _ in range(3):
        assert bucket.take(now=start)
    assert not bucket.take(now=start)
    assert bucket.take(now=start + 0.101)  # one token per 1/rate seconds
    assert not bucket.take(now=start + 0.101)
    # an hour of silence banks no more than `burst`
    later = start + 3600
    assert [bucket.take(now=later) for _ in range(4)] == [True, True, True, False]


def test_zero_rate_means_unlimited():
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.take(now=0) for _ in range(10_000))
    assert not bucket.abusive(now=1e9)


def test_abusive_after_abuse_seconds_of_sustained_refusals():
    bucket = TokenBucket(rate=10, burst=10)
    start = now = bucket.updated
    while bucket.take(now=now):
        pass
    # keep flooding at 100 frames/s: refused most of the time, never recovering
    verdicts = []
    while now < start + limits.ABUSE_SECONDS + 0.5:
        now += 0.01
        if not bucket.take(now=now):
            verdicts.append((now - start, bucket.abusive(now=now)))
    assert all(not abusive for elapsed, abusive in verdicts if elapsed < limits.ABUSE_SECONDS)
    assert all(abusive for elapsed, abusive in verdicts if elapsed >= limits.ABUSE_SECONDS)
    assert verdicts[-1][1]


def test_client_that_slows_down_is_forgiven():
    bucket = TokenBucket(rate=10, burst=10)
    start = now = bucket.updated
    while bucket.take(now=now):
        pass
    # from now on it sends at half the limit for longer than ABUSE_SECONDS
    while now < start + 2 * limits.ABUSE_SECONDS:
        now += 0.2
        assert bucket.take(now=now)
    # a fresh burst past the limit is refused but does not count as sustained abuse
    while bucket.take(now=now):
        pass
    assert not bucket.abusive(now=now)
    assert not bucket.abusive(now=now + limits.ABUSE_SECONDS / 2)


def test_silence_after_abuse_resets_the_clock():
    bucket = TokenBucket(rate=10, burst=5)
    start = bucket.updated
    while bucket.take(now=start):
        pass
    assert bucket.take(now=start + 60)  # a full bucket again, with tokens to spare
    while bucket.take(now=start + 60):
        pass
    assert not bucket.abusive(now=start + 60 + limits.ABUSE_SECONDS - 1)


# ---------------------------------------------------------------------------------------------
# The consumer


async def flood(communicator, count: int, action: str = "ping", prefix: str = "f") -> None:
    for index in range(count):
        await communicator.send_json_to({"action": action, "request_id": f"{prefix}{index}"})


async def replies(communicator, count: int) -> list[dict]:
    return [await communicator.receive_json_from(timeout=3) for _ in range(count)]


async def test_frames_over_the_limit_get_rate_limited_errors_and_connection_stays_open(connect, realtime):
    realtime(client_rate_limit=2, client_rate_burst=3)
    communicator = await connect()
    await flood(communicator, 8)
    frames = await replies(communicator, 8)
    kinds = [frame["type"] if frame["type"] == "pong" else frame["content"]["type"] for frame in frames]
    assert kinds == ["pong"] * 3 + ["rate_limited"] * 5
    assert all(frame["content"]["error"] for frame in frames[3:])
    await asyncio.sleep(0.6)  # one token back at 2/s
    await flood(communicator, 1, prefix="later")
    assert (await communicator.receive_json_from(timeout=3))["type"] == "pong"
    await communicator.disconnect()


async def test_rate_limited_error_carries_the_request_id(connect, realtime):
    realtime(client_rate_limit=1, client_rate_burst=1)
    communicator = await connect()
    await flood(communicator, 2)
    frames = await replies(communicator, 2)
    assert frames[1]["content"]["type"] == "rate_limited"
    assert [frame.get("request_id") for frame in frames] == ["f0", "f1"]
    await communicator.disconnect()


async def test_rate_limited_publishes_are_not_delivered(connect, realtime):
    realtime(client_rate_limit=1, client_rate_burst=2)
    publisher, subscriber = await connect(), await connect()
    await subscriber.send_json_to({"action": "subscribe", "data": {"channel": "room"}})
    assert (await subscriber.receive_json_from(timeout=3))["type"] == "subscribed"
    for index in range(6):
        await publisher.send_json_to({"action": "send_to_channel", "data": {"channel": "room", "content": index}})
    acks = [frame["type"] for frame in await replies(publisher, 6)]
    assert acks.count("ack") == 2 and acks.count("error") == 4
    delivered = [(await subscriber.receive_json_from(timeout=3))["content"] for _ in range(2)]
    assert delivered == [0, 1]
    assert await subscriber.receive_nothing(timeout=0.2)
    await publisher.disconnect()
    await subscriber.disconnect()


async def test_invalid_frames_count_against_the_limit(connect, realtime):
    realtime(client_rate_limit=1, client_rate_burst=2)
    communicator = await connect()
    for _ in range(4):
        await communicator.send_to(text_data="{not json")
    codes = [frame["content"]["type"] for frame in await replies(communicator, 4)]
    assert codes == ["invalid_json", "invalid_json", "rate_limited", "rate_limited"]
    await communicator.disconnect()


async def test_another_connections_pings_are_unaffected(connect, realtime):
    realtime(client_rate_limit=2, client_rate_burst=2)
    noisy, quiet = await connect(), await connect()
    await flood(noisy, 20)
    limited = [frame for frame in await replies(noisy, 20) if frame["type"] == "error"]
    assert len(limited) == 18
    for index in range(2):
        await quiet.send_json_to({"action": "ping", "request_id": f"q{index}"})
        reply = await quiet.receive_json_from(timeout=3)
        assert reply == {"type": "pong", "content": reply["content"], "request_id": f"q{index}"}
    await noisy.disconnect()
    await quiet.disconnect()


async def test_sustained_abuse_closes_4429_and_spares_others(connect, realtime, monkeypatch):
    monkeypatch.setattr(limits, "ABUSE_SECONDS", 0.3)
    realtime(client_rate_limit=5, client_rate_burst=2)
    abuser, bystander = await connect(), await connect()
    first_limited = close = None
    deadline = time.monotonic() + 3
    while close is None and time.monotonic() < deadline:
        await abuser.send_json_to({"action": "ping"})
        await asyncio.sleep(0.005)
        while not abuser.output_queue.empty():
            output = abuser.output_queue.get_nowait()
            if output["type"] == "websocket.close":
                close = (output, time.monotonic())
            elif first_limited is None and json.loads(output["text"])["type"] == "error":
                first_limited = time.monotonic()
    assert close is not None, "sustained abuse must close the connection"
    output, closed_at = close
    assert output == {"type": "websocket.close", "code": 4429, "reason": "rate limit exceeded"}
    assert closed_at - first_limited >= 0.3 - 0.02  # not before ABUSE_SECONDS of refusals
    await bystander.send_json_to({"action": "ping", "request_id": "b"})
    assert (await bystander.receive_json_from(timeout=3))["type"] == "pong"
    await bystander.disconnect()


async def test_a_publish_sent_after_the_4429_close_is_not_acted_on(connect, realtime, monkeypatch):
    """Frames that reach the application once it has closed the connection are dropped (under
    any server; daphne does not even hand them over): the abuser's publish in flight goes nowhere."""
    monkeypatch.setattr(limits, "ABUSE_SECONDS", 0.3)
    realtime(client_rate_limit=5, client_rate_burst=2)
    abuser, listener = await connect(), await connect()
    await listener.send_json_to({"action": "subscribe", "data": {"channel": "room"}, "request_id": "s"})
    assert (await listener.receive_json_from(timeout=3))["type"] == "subscribed"
    closed = False
    deadline = time.monotonic() + 3
    while not closed and time.monotonic() < deadline:
        await abuser.send_json_to({"action": "ping"})
        await asyncio.sleep(0.005)
        while not abuser.output_queue.empty():
            closed = closed or abuser.output_queue.get_nowait()["type"] == "websocket.close"
    assert closed
    await asyncio.sleep(1.1)  # the rate budget refills: a frame now would be admitted
    await abuser.send_json_to({"action": "send_to_channel", "data": {"channel": "room", "content": "late"}})
    assert await listener.receive_nothing(timeout=0.5)
    assert await abuser.receive_nothing(timeout=0.1)  # no ack either
    await listener.disconnect()


async def test_short_burst_over_the_limit_does_not_close(connect, realtime, monkeypatch):
    monkeypatch.setattr(limits, "ABUSE_SECONDS", 0.3)
    realtime(client_rate_limit=20, client_rate_burst=2)
    communicator = await connect()
    for _ in range(3):  # three bursts, each past the limit, with calm in between
        await flood(communicator, 5)
        frames = await replies(communicator, 5)
        assert [frame["type"] for frame in frames].count("pong") >= 2
        await asyncio.sleep(0.25)
    await flood(communicator, 1, prefix="last")
    assert (await communicator.receive_json_from(timeout=3))["type"] == "pong"
    assert await communicator.receive_nothing(timeout=0.1)
    await communicator.disconnect()


# ---------------------------------------------------------------------------------------------
# Per client: one budget over all of a user's connections, and connection counts


def user_token(user_id: str) -> str:
    from streaming.auth import authenticator

    return authenticator.create_access_token({"sub": user_id})


async def test_a_users_connections_share_one_rate_budget(connect, realtime):
    realtime(client_rate_limit=0.5, client_rate_burst=3)
    token = user_token("sharer")
    first, second, stranger = await connect(f"token={token}"), await connect(f"token={token}"), await connect()
    await flood(first, 3)
    assert [frame["type"] for frame in await replies(first, 3)] == ["pong"] * 3
    await flood(second, 2)
    assert [frame["content"]["type"] for frame in await replies(second, 2)] == ["rate_limited"] * 2
    await flood(stranger, 3)  # another client has its own budget
    assert [frame["type"] for frame in await replies(stranger, 3)] == ["pong"] * 3
    for communicator in (first, second, stranger):
        await communicator.disconnect()


async def test_connections_per_user_are_limited_per_process(connect, realtime):
    realtime(max_connections_per_user=2)
    token = user_token("crowd")
    kept = [await connect(f"token={token}"), await connect(f"token={token}")]
    refused = await connect(f"token={token}", greet=False)
    closed = await refused.receive_output(timeout=3)
    assert closed["type"] == "websocket.close" and closed["code"] == 4429
    assert "too many connections for this user" in closed["reason"]
    other = await connect(f"token={user_token('someone-else')}")  # greeted: admitted
    await kept[0].disconnect()
    await asyncio.sleep(0.05)
    again = await connect(f"token={token}")  # a slot came free
    for communicator in (kept[1], other, again):
        await communicator.disconnect()


async def test_connections_per_ip_are_limited_per_process(ws_app, realtime):
    from channels.testing import WebsocketCommunicator

    realtime(max_connections_per_ip=1)

    async def open_from(ip: str):
        communicator = WebsocketCommunicator(ws_app, "/ws/connect")
        communicator.scope["client"] = (ip, 40000)
        assert (await communicator.connect())[0]
        return communicator, await communicator.receive_output(timeout=3)

    first, greeting = await open_from("203.0.113.7")
    assert greeting["type"] == "websocket.send"
    _, refused = await open_from("203.0.113.7")
    assert refused["type"] == "websocket.close" and refused["code"] == 4429
    assert "too many connections from this address" in refused["reason"]
    other, other_greeting = await open_from("203.0.113.8")
    assert other_greeting["type"] == "websocket.send"
    await first.disconnect()
    await other.disconnect()
