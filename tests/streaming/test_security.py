"""Network admission on both transports: Origin, the IP allowlist and X-Forwarded-For (README: "Authentication and security")."""

from __future__ import annotations

import json
from ipaddress import ip_network

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator

from streaming import security

pytestmark = pytest.mark.django_db(transaction=True)


def networks(*items: str) -> tuple:
    return tuple(ip_network(item) for item in items)


async def ws_first_frame(app, headers=(), client=("127.0.0.1", 40000)) -> dict:
    """Open /ws/connect from `client` with `headers`; the first frame after the accept."""
    communicator = WebsocketCommunicator(app, "/ws/connect", headers=list(headers))
    communicator.scope["client"] = client  # read when the app starts, on connect()
    accepted, _ = await communicator.connect(timeout=3)
    assert accepted, 'refusals accept first (README, "WebSocket protocol")'
    first = await communicator.receive_output(timeout=3)
    if first["type"] == "websocket.send":
        await communicator.disconnect()
    return first


async def sse_response(app, headers=(), client=("127.0.0.1", 40000)) -> tuple[int, dict, bytes]:
    """GET /sse/connect from `client`; (status, headers, first body chunk); a stream is left at once."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/sse/connect",
        "raw_path": b"/sse/connect",
        "query_string": b"",
        "headers": list(headers),
        "client": client,
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=3)
    body = await communicator.receive_output(timeout=3)
    if start["status"] == 200:
        await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=3)
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


def origin(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"origin", value.encode())]


# ---------------------------------------------------------------------------------------------
# Origin


@pytest.mark.parametrize(
    ("allowed_origins", "hosts", "value", "admitted"),
    [
        ((), ("localhost", "127.0.0.1", "[::1]"), "http://localhost:8000", True),
        ((), ("localhost", "127.0.0.1", "[::1]"), "http://127.0.0.1:8000", True),
        ((), ("localhost", "127.0.0.1", "[::1]"), "http://[::1]:8000", True),
        ((), ("localhost", "127.0.0.1", "[::1]"), "https://evil.example", False),
        ((), ("localhost",), "http://localhost.evil.example", False),
        ((), (".example.com",), "https://app.example.com", True),
        ((), (".example.com",), "https://example.com.evil.net", False),
        ((), ("localhost",), "null", False),
        ((), ("localhost",), "file://localhost", False),
        (("https://app.example",), ("localhost",), "https://app.example", True),
        (("https://app.example",), ("localhost",), "https://APP.example", True),
        (("https://app.example",), ("localhost",), "http://app.example", False),
        (("https://app.example",), ("localhost",), "https://app.example:8443", False),
        (("https://app.example",), ("localhost",), "https://app.example.evil.net", False),
        (("https://app.example",), ("localhost",), "http://localhost:8000", False),
        (("app.example",), ("localhost",), "http://app.example:3000", True),
        (("*",), ("localhost",), "https://anything.example", True),
        # Only a bare scheme://host[:port] is an Origin: what urlsplit would read in part is refused.
        ((), ("localhost", "127.0.0.1", "[::1]"), "http://[::1].evil.example", False),
        ((), ("localhost",), "http://localhost:8000@evil.example", False),
        ((), ("localhost",), "http://evil.example@localhost", False),
        ((), ("localhost",), "http://localhost/", False),
        ((), ("localhost",), "http://localhost:99999", False),
        ((), ("localhost",), "http://LOCALHOST:8000", True),
    ],
)
def test_origin_allowed(realtime, allowed_origins, hosts, value, admitted):
    realtime(allowed_origins=allowed_origins, django_allowed_hosts=hosts)
    assert security.origin_allowed(value) is admitted


async def test_ws_disallowed_origin_accepted_then_closed_4403(ws_app):
    first = await ws_first_frame(ws_app, origin("https://evil.example"))
    assert first == {"type": "websocket.close", "code": 4403, "reason": "origin not allowed"}


async def test_ws_allowed_and_missing_origin_are_admitted(ws_app):
    for headers in (origin("http://localhost:8000"), []):
        first = await ws_first_frame(ws_app, headers)
        assert json.loads(first["text"])["type"] == "connected"


async def test_sse_disallowed_origin_gets_403_without_cors(ws_app):
    status, headers, body = await sse_response(ws_app, origin("https://evil.example"))
    assert status == 403
    assert json.loads(body)["type"] == "forbidden"
    assert "access-control-allow-origin" not in headers


async def test_sse_allowed_origin_gets_stream_with_cors(ws_app, realtime):
    realtime(allowed_origins=("https://app.example",))
    status, headers, body = await sse_response(ws_app, origin("https://app.example"))
    assert status == 200 and body.startswith(b"retry:")
    assert headers["access-control-allow-origin"] == "https://app.example"
    status, _, _ = await sse_response(ws_app)
    assert status == 200


async def test_origin_refusal_wins_over_valid_credentials(ws_app):
    from streaming.auth import authenticator

    token = authenticator.create_access_token({"sub": "u1", "role": "admin"})
    communicator = WebsocketCommunicator(ws_app, f"/ws/connect?token={token}", headers=origin("https://evil.example"))
    await communicator.connect(timeout=3)
    closed = await communicator.receive_output(timeout=3)
    assert closed["code"] == 4403


# ---------------------------------------------------------------------------------------------
# IP allowlist and X-Forwarded-For


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.9", None, (), "203.0.113.9"),
        ("203.0.113.9", "10.0.0.7", (), "203.0.113.9"),  # untrusted peer: header ignored
        ("127.0.0.1", "10.0.0.7", ("127.0.0.1/32",), "10.0.0.7"),
        ("127.0.0.1", "10.0.0.7", ("10.0.0.0/8",), "127.0.0.1"),  # peer itself not trusted
        ("127.0.0.1", "10.0.0.7, 203.0.113.9", ("127.0.0.1/32",), "203.0.113.9"),  # left part is spoofable
        ("127.0.0.1", "203.0.113.9, 10.1.1.1", ("127.0.0.1/32", "10.0.0.0/8"), "203.0.113.9"),
        ("127.0.0.1", "10.1.1.1", ("127.0.0.1/32", "10.0.0.0/8"), "10.1.1.1"),  # every hop trusted
        ("127.0.0.1", " 2001:db8::1 ", ("127.0.0.0/8",), "2001:db8::1"),
        ("::1", "198.51.100.4", ("::1/128",), "198.51.100.4"),
    ],
)
def test_client_ip_trusts_forwarded_for_only_from_trusted_proxies(realtime, peer, forwarded, trusted, expected):
    realtime(trusted_proxies=networks(*trusted))
    assert security.client_ip(peer, forwarded) == expected


def test_ip_allowed(realtime):
    realtime(allowed_ips=())
    assert security.ip_allowed("198.51.100.1") and security.ip_allowed(None)
    realtime(allowed_ips=networks("10.0.0.0/8", "2001:db8::/32"))
    assert security.ip_allowed("10.2.3.4") and security.ip_allowed("2001:db8::5")
    assert not security.ip_allowed("11.0.0.1")
    assert not security.ip_allowed(None) and not security.ip_allowed("garbage")


async def test_ws_ip_outside_allowed_ips_closed_4403(ws_app, realtime):
    realtime(allowed_ips=networks("10.0.0.0/8"))
    first = await ws_first_frame(ws_app, client=("192.0.2.10", 1234))
    assert first == {"type": "websocket.close", "code": 4403, "reason": "IP address not allowed"}
    first = await ws_first_frame(ws_app, client=("10.9.8.7", 1234))
    assert json.loads(first["text"])["type"] == "connected"


async def test_sse_ip_outside_allowed_ips_gets_403(ws_app, realtime):
    realtime(allowed_ips=networks("10.0.0.0/8"))
    status, _, body = await sse_response(ws_app, client=("192.0.2.10", 1234))
    assert status == 403 and json.loads(body)["type"] == "forbidden"
    status, _, _ = await sse_response(ws_app, client=("10.9.8.7", 1234))
    assert status == 200


async def test_forwarded_for_is_honoured_only_from_a_trusted_proxy(ws_app, realtime):
    realtime(allowed_ips=networks("10.0.0.0/8"), trusted_proxies=networks("127.0.0.1/32"))
    forwarded = [(b"x-forwarded-for", b"10.0.0.7")]
    # behind the trusted proxy the forwarded client address is the one checked
    first = await ws_first_frame(ws_app, forwarded, client=("127.0.0.1", 1))
    assert json.loads(first["text"])["type"] == "connected"
    status, _, _ = await sse_response(ws_app, forwarded, client=("127.0.0.1", 1))
    assert status == 200
    # from anywhere else the header is ignored: spoofing an allowed address does not help
    first = await ws_first_frame(ws_app, forwarded, client=("192.0.2.10", 1))
    assert first["code"] == 4403
    status, _, _ = await sse_response(ws_app, forwarded, client=("192.0.2.10", 1))
    assert status == 403
    # nor does prepending one through the trusted proxy
    spoofed = [(b"x-forwarded-for", b"10.0.0.7, 192.0.2.10")]
    first = await ws_first_frame(ws_app, spoofed, client=("127.0.0.1", 1))
    assert first["code"] == 4403
    status, _, _ = await sse_response(ws_app, spoofed, client=("127.0.0.1", 1))
    assert status == 403


async def test_connection_records_the_forwarded_client_ip(ws_app, realtime):
    from streaming.runtime import get_runtime

    realtime(trusted_proxies=networks("127.0.0.1/32"))
    communicator = WebsocketCommunicator(ws_app, "/ws/connect", headers=[(b"x-forwarded-for", b"198.51.100.23")])
    communicator.scope["client"] = ("127.0.0.1", 1)
    await communicator.connect(timeout=3)
    await communicator.receive_json_from(timeout=3)
    (connection,) = get_runtime().registry.connections.values()
    assert connection.ip == "198.51.100.23"
    await communicator.disconnect()
