"""End to end against real daphne processes: the product as `make run` starts it."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import struct
import time

import httpx
import pytest
import websockets

from tests.support.clients import WSClient, raw_websocket, read_close_code, send_raw_frame
from tests.support.server import ADMIN_HEADERS

pytestmark = pytest.mark.server


async def test_two_clients_receive_envelope_published_over_http(live_server):
    async with WSClient(live_server.ws + "/ws/connect") as first, WSClient(live_server.ws + "/ws/connect") as second:
        for client in (first, second):
            assert (await client.call("subscribe", {"channel": "news"}))["type"] == "subscribed"
        async with httpx.AsyncClient() as http:
            response = await http.post(
                live_server.http + "/ws/send-to-channel",
                json={"channel": "news", "message": {"type": "news_update", "content": {"title": "hi"}}},
            )
        assert response.status_code == 202
        published_id = response.json()["id"]
        for client in (first, second):
            envelope = await client.recv()
            assert envelope["id"] == published_id
            assert envelope["type"] == "news_update" and envelope["channel"] == "news"
            assert envelope["content"] == {"title": "hi"}


async def test_seed_websocket_example_frames(live_server):
    async with WSClient(live_server.ws + "/ws/connect") as client:
        pong = await client.call("ping")
        assert pong["type"] == "pong"
        assert (await client.call("subscribe", {"channel": "test_channel"}))["content"]["channel"] == "test_channel"
        ack = await client.call("send_to_channel", {"channel": "test_channel", "content": "Привет всем!"})
        # the subscriber gets its own message (possibly before the ack)
        assert ack["type"] in ("ack", "text")


async def test_delete_connection_closes_it_with_4409(live_server):
    async with WSClient(live_server.ws + "/ws/connect") as client:
        connection_id = client.greeting["data"]["connection_id"]
        async with httpx.AsyncClient() as http:
            listed = (await http.get(live_server.http + "/ws/connections", headers=ADMIN_HEADERS)).json()
            assert connection_id in {c["id"] for c in listed["results"]}
            response = await http.delete(f"{live_server.http}/ws/connections/{connection_id}", headers=ADMIN_HEADERS)
        assert response.status_code == 204
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv(timeout=2)
        assert closed.value.rcvd.code == 4409


async def test_frames_a_kicked_client_sends_after_its_close_frame_are_not_acted_on(live_server):
    """Once the server has sent its close frame (here 4409, an admin's DELETE), what the client
    still sends before it reads that frame — a publish in flight — is read and dropped, not
    published: a kicked or rate-limited client gets nothing more done."""
    async with WSClient(live_server.ws + "/ws/connect") as subscriber, httpx.AsyncClient() as http:
        await subscriber.call("subscribe", {"channel": "after-close"})
        kicked = raw_websocket(live_server.port)
        kicked.settimeout(5)
        head = kicked.recv(2, socket.MSG_WAITALL)  # the greeting: one text frame under 64 KiB
        length = head[1] if head[1] < 126 else int.from_bytes(kicked.recv(2, socket.MSG_WAITALL), "big")
        greeting = kicked.recv(length, socket.MSG_WAITALL)
        connection_id = json.loads(greeting)["data"]["connection_id"]
        publish = '{"action":"send_to_channel","data":{"channel":"after-close","content":"%s"}}'
        send_raw_frame(kicked, publish % "before")
        assert (await subscriber.recv(timeout=5))["content"] == "before"  # the frame works while open
        response = await http.delete(f"{live_server.http}/ws/connections/{connection_id}", headers=ADMIN_HEADERS)
        assert response.status_code == 204
        assert await asyncio.to_thread(read_close_code, kicked, 5) == 4409  # the close frame is here
        send_raw_frame(kicked, publish % "after")  # sent before the client answers the close
        with pytest.raises(TimeoutError):
            await subscriber.recv(timeout=1.5)
        kicked.close()


async def test_stats_count_real_connections(live_server):
    async with WSClient(live_server.ws + "/ws/connect") as client:
        await client.call("subscribe", {"channel": "stats-a"})
        async with httpx.AsyncClient() as http:
            stats = (await http.get(live_server.http + "/ws/stats")).json()
        assert stats["websocket"]["total"] >= 1
        assert stats["channels"]["subscriptions"] >= 1


async def test_slow_consumer_is_closed_4429_and_others_keep_receiving(live_server_factory):
    server = live_server_factory(WEBSOCKET_MESSAGE_QUEUE_SIZE="20")
    slow = raw_websocket(server.port)
    send_raw_frame(slow, '{"action":"subscribe","data":{"channel":"firehose"}}')
    body = {"channel": "firehose", "message": {"content": "x" * 20000}}
    published = 0
    async with WSClient(server.ws + "/ws/connect", max_size=None) as healthy, httpx.AsyncClient() as http:
        await healthy.call("subscribe", {"channel": "firehose"})
        healthy_id = healthy.greeting["data"]["connection_id"]
        while published < 600:  # up to 12 MB to a reader that never reads
            assert (await http.post(server.http + "/ws/send-to-channel", json=body)).status_code == 202
            published += 1
            assert (await healthy.recv())["channel"] == "firehose"  # the healthy one keeps receiving
            listed = (await http.get(server.http + "/ws/connections?channel=firehose", headers=ADMIN_HEADERS)).json()[
                "results"
            ]
            if [c["id"] for c in listed] == [healthy_id]:
                break
        assert published < 600, "the slow consumer was never disconnected"
    slow.close()
    # Disconnected well before everything was buffered for it: the outbox (20 messages) and
    # daphne's write buffer (HIGH_WATER) bound the memory a reader that stopped can hold.
    assert published * 20000 < 8 * 1024 * 1024
    assert "slow consumer" in server.log()
    rows = sqlite3.connect(server.database_url.removeprefix("sqlite:///")).execute(
        "select close_code from streaming_connection where closed_at is not null and close_code = 4429"
    )
    assert len(rows.fetchall()) == 1


async def test_websocket_disabled_refuses_the_handshake(live_server_factory):
    server = live_server_factory(WEBSOCKET_ENABLED="false")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(server.ws + "/ws/connect")
    # daphne answers a refused WebSocket handshake with 403; it cannot send a 404 there
    assert refused.value.response.status_code == 403
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http + "/api/")).status_code == 200
        assert (await http.post(server.http + "/ws/broadcast", json={"message": {"content": 1}})).status_code == 202


async def test_unknown_websocket_path_is_refused_not_a_server_error(live_server):
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(live_server.ws + "/ws/nowhere")
    assert refused.value.response.status_code == 403


async def test_sigterm_closes_websockets_1001_and_ends_sse_streams(live_server_factory):
    from tests.support.clients import SSEReader

    server = live_server_factory()
    async with WSClient(server.ws + "/ws/connect") as ws, SSEReader(server.http + "/sse/connect?channels=bye") as sse:
        connection_id = ws.greeting["data"]["connection_id"]
        await ws.call("subscribe", {"channel": "bye"})
        await sse.until("stream-open")
        server.stop()  # SIGTERM, waits for exit
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        error = await sse.until("stream-error")
        assert error["data"]["condition"] == "shutdown"
    database = sqlite3.connect(server.database_url.removeprefix("sqlite:///"))
    row = database.execute(
        "select closed_at, close_code from streaming_connection where id = ?", (connection_id,)
    ).fetchone()
    assert row[0] is not None and row[1] == 1001
    assert database.execute("select count(*) from streaming_connection where closed_at is null").fetchone()[0] == 0
    assert (
        database.execute(
            "select count(*) from streaming_serverprocess where stopped_at is null and id like ?",
            (f"%:{server.process_pid}:%",),
        ).fetchone()[0]
        == 0
    )


async def test_refusal_codes_and_reasons_reach_a_real_client(live_server_factory):
    server = live_server_factory(WEBSOCKET_MAX_CONNECTIONS="1", WEBSOCKET_AUTH_REQUIRED="false")
    async with WSClient(server.ws + "/ws/connect"):
        async with websockets.connect(server.ws + "/ws/connect") as refused:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await refused.recv()
        assert closed.value.rcvd.code == 1013
        assert closed.value.rcvd.reason == "max connections reached"
    async with websockets.connect(server.ws + "/ws/connect?token=garbage") as refused:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await refused.recv()
    assert closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason.startswith("Invalid token")


async def test_a_message_over_the_message_limit_is_closed_1009_and_others_carry_on(live_server):
    """The server itself refuses messages over WEBSOCKET_MAX_MESSAGE_SIZE (64 KiB), before buffering
    more of them, with a closing handshake (1009, clean), not a dropped TCP connection."""
    async with WSClient(live_server.ws + "/ws/connect") as bystander:
        async with websockets.connect(live_server.ws + "/ws/connect", max_size=None) as socket:
            await socket.recv()  # connected
            await socket.send('{"action": "ping", "data": {}, "request_id": "' + "x" * 65_000 + '"}')
            assert (await socket.recv()) is not None  # at the limit: an answer (an error reply)
            await socket.send("x" * (65536 + 1))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert closed.value.rcvd_then_sent is True  # the server's close frame came first: a clean close
        assert (await bystander.call("ping"))["type"] == "pong"


async def test_a_client_still_uploading_an_oversized_message_learns_1009_when_it_reads(live_server):
    """A client on a slow link is refused at the first bytes of a message over the limit, but its
    library finishes writing the message before it reads (most do). The server keeps reading (and
    dropping) what comes for longer than autobahn's one-second close handshake: the upload ends
    without a reset, the close frame 1009 waits for the client, and its reply ends the connection."""

    def upload_then_read() -> tuple[list[str], int | None, bytes]:
        connection = raw_websocket(live_server.port)
        connection.recv(4096)  # the greeting, read while it is small
        size = 65536 + 1
        connection.sendall(b"\x81\xff" + struct.pack("!Q", size) + b"\x00\x00\x00\x00")
        errors = []
        for start in range(0, size, 2048):  # ~3 s on the wire
            try:
                connection.sendall(b"x" * min(2048, size - start))
            except OSError as error:
                errors.append(repr(error))
                break
            time.sleep(0.09)
        code = read_close_code(connection, timeout=10)
        connection.sendall(b"\x88\x82\x00\x00\x00\x00" + (code or 1000).to_bytes(2, "big"))  # the reply
        connection.settimeout(10)
        try:
            rest = connection.recv(100)
        except ConnectionResetError:  # autobahn ends a server-initiated close with a reset
            rest = b""
        connection.close()
        return errors, code, rest

    async with WSClient(live_server.ws + "/ws/connect") as bystander:
        errors, code, rest = await asyncio.to_thread(upload_then_read)
        assert errors == []  # the server did not reset the connection under the upload
        assert code == 1009
        assert rest == b""  # the reply ended the connection (a timeout would have raised)
        assert (await bystander.call("ping"))["type"] == "pong"


@pytest.mark.parametrize(
    ("inside_a_frame", "keeps_sending", "dropped_within"),
    [(False, False, (0.5, 3.0)), (True, False, (9.0, 14.0)), (True, True, (9.0, 14.0))],
    ids=["silent-between-frames", "stalled-inside-the-frame", "sending-without-end"],
)
def test_a_refused_client_that_never_answers_the_close_is_dropped_in_bounded_time(
    live_server, inside_a_frame, keeps_sending, dropped_within
):
    """The time given to a client after our close frame is bounded: a silent one between frames
    is dropped after autobahn's second; one inside its frame (stalled, or sending without end)
    after 10 s (`CLOSING_UPLOAD_SECONDS`)."""

    connection = raw_websocket(live_server.port)
    connection.recv(4096)  # the greeting
    if inside_a_frame:
        connection.sendall(b"\x81\xff" + struct.pack("!Q", 1 << 40) + b"\x00\x00\x00\x00" + b"x" * 1024)
    else:  # a whole frame over the limit, then nothing
        connection.sendall(b"\x81\xff" + struct.pack("!Q", 65537) + b"\x00\x00\x00\x00" + b"x" * 65537)
    started = time.monotonic()
    connection.settimeout(0.05)
    ended = None
    while ended is None and time.monotonic() - started < 20:
        try:
            if keeps_sending:
                connection.sendall(b"x" * 1024)
            if connection.recv(1 << 16) == b"":
                ended = time.monotonic() - started
        except TimeoutError:
            pass
        except OSError:  # reset, or a broken pipe while sending
            ended = time.monotonic() - started
    connection.close()
    assert ended is not None and dropped_within[0] <= ended <= dropped_within[1], ended


def _raw_request(port: int, head: bytes, body_chunks=(), timeout: float = 5) -> tuple[bytes, int]:
    """Send a request head, then body chunks while the server lets us; return what it answered and
    how many body bytes it took before answering."""
    import socket as sockets

    connection = sockets.create_connection(("127.0.0.1", port), timeout=timeout)
    connection.sendall(head)
    sent = 0
    try:
        for chunk in body_chunks:
            connection.setblocking(False)
            try:
                if connection.recv(1, sockets.MSG_PEEK):
                    break  # an answer is waiting: stop sending
            except BlockingIOError:
                pass
            finally:
                connection.setblocking(True)
            connection.sendall(chunk)
            sent += len(chunk)
            time.sleep(0.005)  # let an answer arrive before the next piece
    except OSError:
        pass  # the server closed while we were still sending
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except OSError:
        pass
    connection.close()
    return answer, sent


@pytest.mark.parametrize("path", ["/ws/broadcast", "/no/such/url"])
async def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(live_server, path):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {300 * 1024 * 1024}\r\n\r\n"
    ).encode()
    answer, _ = _raw_request(live_server.port, head)  # not one byte of the 300 MB is sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"type":"message_too_large"' in answer


def test_a_chunked_body_is_cut_off_at_the_limit(live_server):
    head = (
        b"POST /ws/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    chunks = [b"%x\r\n%b\r\n" % (len(piece), piece)] * 64  # 4 MiB offered, the limit is 1 MiB
    answer, sent = _raw_request(live_server.port, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 3 * 1024 * 1024  # refused on the way, not after the whole body


def test_a_chunked_body_under_the_limit_is_read(live_server):
    body = b'{"channel": "chunked", "message": {"content": "hello"}}'
    head = (
        b"POST /ws/send-to-channel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    answer, _ = _raw_request(live_server.port, head, [b"%x\r\n%b\r\n" % (len(body), body), b"0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 202"), answer[:300]


async def test_batch_publish_reaches_subscribers_of_every_channel(live_server):
    async with WSClient(live_server.ws + "/ws/connect") as one, WSClient(live_server.ws + "/ws/connect") as two:
        await one.call("subscribe", {"channel": "batch-a"})
        await two.call("subscribe", {"channel": "batch-b"})
        messages = [
            {"channel": "batch-a", "message": {"content": 1}, "persist": True},
            {"channel": "batch-b", "message": {"content": 2}},
            {"channel": "batch-a", "message": {"content": 3}, "persist": True},
        ]
        async with httpx.AsyncClient() as http:
            response = await http.post(live_server.http + "/api/publish/batch/", json={"messages": messages})
        assert response.status_code == 202, response.text
        results = response.json()["results"]
        assert [(await one.recv())["id"] for _ in range(2)] == [results[0]["id"], results[2]["id"]]
        assert (await two.recv())["id"] == results[1]["id"]


async def test_publishing_without_a_session_checks_the_host_like_django(live_server):
    async with httpx.AsyncClient() as http:
        body = {"channel": "hosted", "message": {"content": 1}}
        refused = await http.post(live_server.http + "/ws/send-to-channel", json=body, headers={"Host": "evil.example"})
        assert refused.status_code == 400
        accepted = await http.post(live_server.http + "/ws/send-to-channel", json=body)
        assert accepted.status_code == 202 and accepted.headers["content-type"] == "application/json"
        with_cookie = await http.post(
            live_server.http + "/ws/send-to-channel", json=body, headers={"Cookie": "sessionid=not-a-session"}
        )
        assert with_cookie.status_code == 202  # the whole Django stack: an unknown session is anonymous


def _shell(server, code: str):
    import subprocess
    import sys

    from tests.support.server import ROOT

    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_publish_from_another_process_without_redis_says_what_to_set(live_server):
    async with WSClient(live_server.ws + "/ws/connect") as client:
        await client.call("subscribe", {"channel": "from-shell"})
        await asyncio.sleep(0.5)  # the server's process row is written
        plain = _shell(
            live_server, "from streaming import services; services.publish_to_channel(channel='from-shell', content=1)"
        )
        assert plain.returncode != 0
        assert "REDIS_URL" in plain.stderr and "Unavailable" in plain.stderr
        persisted = _shell(
            live_server,
            "from streaming import services; print(services.publish_to_channel(channel='from-shell', content=2, persist=True).offset)",
        )
        assert persisted.returncode == 0, persisted.stderr
        envelope = await client.recv(timeout=10)  # the server's position check finds it in history
        assert envelope["content"] == 2 and envelope["offset"] == int(persisted.stdout.split()[-1])


async def test_closing_a_connection_twice_answers_404_the_second_time(live_server):
    async with WSClient(live_server.ws + "/ws/connect") as client, httpx.AsyncClient() as http:
        url = f"{live_server.http}/ws/connections/{client.greeting['data']['connection_id']}"
        first, second = await http.delete(url, headers=ADMIN_HEADERS), await http.delete(url, headers=ADMIN_HEADERS)
        assert (first.status_code, second.status_code) == (204, 404)


async def test_the_products_heartbeat_replaces_daphnes_protocol_pings(live_server_factory):
    """A ping and a pong per connection every 20 s on top of the JSON heartbeat: daphne's pings are
    off whatever `--ping-interval` says (here 1 s)."""
    server = live_server_factory(WEBSOCKET_HEARTBEAT_INTERVAL="1")
    server.stop()
    server.args = ("--ping-interval", "1")
    server.start()
    sock = raw_websocket(server.port)
    sock.settimeout(0.5)
    opcodes, deadline = [], time.monotonic() + 3.5
    buffer = b""
    while time.monotonic() < deadline:
        try:
            buffer += sock.recv(65536)
        except TimeoutError:
            continue
        while len(buffer) >= 2 and len(buffer) >= 2 + (buffer[1] & 0x7F):
            opcodes.append(buffer[0] & 0x0F)
            buffer = buffer[2 + (buffer[1] & 0x7F) :]
    sock.close()
    assert opcodes.count(0x1) >= 3  # the greeting and the JSON heartbeats, every second
    assert 0x9 not in opcodes  # no protocol ping


async def test_a_client_answering_heartbeats_stays_open_while_its_action_waits(live_server_factory):
    """Heartbeats keep their time and life is counted when a message arrives, not when the
    connection gets to it: a persisted publish waits for the database (its write lock held by
    another process), the client answers heartbeats meanwhile, and the connection outlives
    WEBSOCKET_DISCONNECT_TIMEOUT twice over."""
    server = live_server_factory(WEBSOCKET_HEARTBEAT_INTERVAL="1", WEBSOCKET_DISCONNECT_TIMEOUT="3")
    database = sqlite3.connect(server.database_url.removeprefix("sqlite:///"), isolation_level=None)
    async with websockets.connect(server.ws + "/ws/connect") as socket:
        await socket.recv()  # connected
        database.execute("BEGIN IMMEDIATE")  # the server's writes queue behind this lock
        try:
            publish = {"action": "send_to_channel", "data": {"channel": "held", "content": 1, "persist": True}}
            await socket.send(json.dumps({**publish, "request_id": "held"}))
            heartbeats, deadline = 0, time.monotonic() + 7
            while (left := deadline - time.monotonic()) > 0:
                try:
                    frame = json.loads(await asyncio.wait_for(socket.recv(), left))
                except TimeoutError:
                    break
                assert frame["type"] == "heartbeat", frame  # no reply yet: the publish still waits
                heartbeats += 1
                await socket.send('{"action":"pong"}')
        finally:
            database.execute("ROLLBACK")
            database.close()
        assert heartbeats >= 5
        reply = json.loads(await asyncio.wait_for(socket.recv(), 10))
        while reply["type"] == "heartbeat":
            reply = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert reply["type"] == "ack" and reply["content"]["offset"] == 1 and reply["request_id"] == "held"
