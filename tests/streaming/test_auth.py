"""Credentials, auth switches and channel permissions on every transport (README: "Channels", "Authentication and security", "HTTP API").

WebSocket through WebsocketCommunicator, SSE by calling the ASGI app with a scope (and once
through a real daphne with httpx), the HTTP API with Django's test client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import jwt
import pytest
import websockets
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.test import Client
from rest_framework_simplejwt.tokens import RefreshToken

from realtime_project.env import load_config
from streaming.auth import authenticator
from tests.support.consumers import request

pytestmark = pytest.mark.django_db(transaction=True)

SIGNING_KEY = settings.SIMPLE_JWT["SIGNING_KEY"]
API_KEY = "right-api-key-0123456789abcdef"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PRIVATE_PEM = RSA_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


# ---------------------------------------------------------------------------------------------
# Crafting credentials


def claims(**changes) -> dict:
    """The claims of a valid simplejwt access token for `u1`; a change to None removes a claim."""
    now = int(time.time())
    payload = {"token_type": "access", "exp": now + 600, "iat": now, "jti": uuid.uuid4().hex, "sub": "u1"}
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict, payload: dict, secret: bytes | None) -> str:
    """A JWT built by hand (PyJWT refuses to build some of the attacks)."""
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret is not None else b""
    return signing_input + "." + _b64(signature)


def refresh_token_for(user_id: str) -> str:
    token = RefreshToken()
    token["sub"] = user_id
    return str(token)


# Every kind of present-but-invalid JWT (README, "Authentication and security"): name → factory (tokens depend on the clock).
BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: jwt.encode(claims(exp=int(time.time()) - 30), SIGNING_KEY, algorithm="HS256"),
    "other_key": lambda: jwt.encode(claims(), "another-key-of-sufficient-length-123456", algorithm="HS256"),
    "alg_none": lambda: hand_signed({"alg": "none", "typ": "JWT"}, claims(), None),
    "alg_none_upper": lambda: hand_signed({"alg": "None", "typ": "JWT"}, claims(), None),
    "rs256_signed": lambda: jwt.encode(claims(), RSA_PRIVATE_PEM, algorithm="RS256"),
    "rs256_header_hmac_dev_key": lambda: hand_signed({"alg": "RS256", "typ": "JWT"}, claims(), SIGNING_KEY.encode()),
    "hs256_public_key_secret": lambda: hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), RSA_PUBLIC_PEM),
    "refresh_as_access": lambda: refresh_token_for("u1"),
    "future_nbf": lambda: jwt.encode(claims(nbf=int(time.time()) + 3600), SIGNING_KEY, algorithm="HS256"),
    "garbage": lambda: "not-a-jwt-at-all",
    "no_sub": lambda: jwt.encode(claims(sub=None), SIGNING_KEY, algorithm="HS256"),
    "bad_sub": lambda: jwt.encode(claims(sub="a b/c"), SIGNING_KEY, algorithm="HS256"),
    "no_jti": lambda: jwt.encode(claims(jti=None), SIGNING_KEY, algorithm="HS256"),
    "no_exp": lambda: jwt.encode(claims(exp=None), SIGNING_KEY, algorithm="HS256"),
    "huge_exp": lambda: jwt.encode(claims(exp=1e300), SIGNING_KEY, algorithm="HS256"),
    "nan_exp": lambda: jwt.encode(claims(exp=float("nan")), SIGNING_KEY, algorithm="HS256"),
}


@dataclass
class Presented:
    """Credentials as a client presents them: a query string, headers, WS subprotocols."""

    query: str = ""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    subprotocols: list[str] = field(default_factory=list)

    def meta(self) -> dict[str, str]:
        """The headers as Django test-client keyword arguments."""
        return {"HTTP_" + name.decode().upper().replace("-", "_"): value.decode() for name, value in self.headers}


def present_token(token: str, source: str) -> Presented:
    if source == "query":
        return Presented(query=f"token={token}")
    if source == "bearer":
        return Presented(headers=[(b"authorization", f"Bearer {token}".encode())])
    assert source == "subprotocol"
    return Presented(subprotocols=["access_token", token])


def present_api_key(key: str, source: str) -> Presented:
    if source == "query":
        return Presented(query=f"api_key={key}")
    assert source == "header"
    return Presented(headers=[(b"x-api-key", key.encode())])


# ---------------------------------------------------------------------------------------------
# Transports


async def ws_open(app, presented: Presented = Presented(), client: tuple[str, int] | None = None):
    """Open /ws/connect; return the communicator, the accepted subprotocol and the first frame out."""
    path = "/ws/connect" + (f"?{presented.query}" if presented.query else "")
    communicator = WebsocketCommunicator(app, path, headers=presented.headers, subprotocols=presented.subprotocols)
    if client is not None:
        communicator.scope["client"] = client
    accepted, subprotocol = await communicator.connect(timeout=3)
    assert accepted, 'refusals accept first (README, "WebSocket protocol")'
    first = await communicator.receive_output(timeout=3)
    return communicator, subprotocol, first


def assert_closed(first: dict, code: int) -> None:
    assert first["type"] == "websocket.close", first
    assert first["code"] == code, first
    assert first["reason"], "a refusal says why"


def greeting_of(first: dict) -> dict:
    assert first["type"] == "websocket.send", first
    greeting = json.loads(first["text"])
    assert greeting["type"] == "connected", greeting
    return greeting


async def sse_open(app, presented: Presented = Presented(), query: str = "", client=("127.0.0.1", 50000)):
    """GET /sse/connect on the ASGI app; return (status, headers, first body bytes). Streams are left at once."""
    query_string = "&".join(part for part in (presented.query, query) if part)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/sse/connect",
        "raw_path": b"/sse/connect",
        "query_string": query_string.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver"), *presented.headers],
        "client": client,
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(timeout=3)
    assert start["type"] == "http.response.start", start
    body = await communicator.receive_output(timeout=3)
    if start["status"] == 200:
        await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=3)
    headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, body["body"]


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    """(event, data) of every complete event in a chunk of an SSE stream."""
    events = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def token_for(user_id: str = "u1", **extra) -> str:
    return authenticator.create_access_token({"sub": user_id, **extra})


@pytest.fixture
def with_api_key(realtime):
    realtime(ws_api_keys=(API_KEY,))


@pytest.fixture
def configure(settings):
    """Settings as the server would parse them from this environment: `configure(SSE_AUTH_REQUIRED="true")`."""

    def apply(**env: str) -> None:
        settings.REALTIME = load_config({"DJANGO_DEBUG": "true", "WS_API_KEYS": API_KEY, **env})

    return apply


# ---------------------------------------------------------------------------------------------
# 1. Every bad credential × every transport is refused; a valid one is accepted


@pytest.mark.parametrize("required", [False, True], ids=["auth-optional", "auth-required"])
@pytest.mark.parametrize("source", ["query", "bearer", "subprotocol"])
@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_ws_bad_token_accepted_then_closed_4401(ws_app, realtime, kind, source, required):
    realtime(websocket_auth_required=required, ws_api_keys=(API_KEY,))
    _, _, first = await ws_open(ws_app, present_token(BAD_TOKENS[kind](), source))
    assert_closed(first, 4401)
    assert first["reason"].lower().startswith("invalid")


@pytest.mark.parametrize("required", [False, True], ids=["auth-optional", "auth-required"])
@pytest.mark.parametrize("source", ["query", "header"])
async def test_ws_wrong_api_key_accepted_then_closed_4401(ws_app, realtime, source, required):
    realtime(websocket_auth_required=required, ws_api_keys=(API_KEY,))
    _, _, first = await ws_open(ws_app, present_api_key(API_KEY + "x", source))
    assert_closed(first, 4401)
    assert first["reason"] == "Invalid API key."


async def test_ws_bad_token_is_refused_even_beside_a_valid_api_key(ws_app, with_api_key):
    presented = Presented(query=f"api_key={API_KEY}&token={BAD_TOKENS['expired']()}")
    _, _, first = await ws_open(ws_app, presented)
    assert_closed(first, 4401)


@pytest.mark.parametrize("required", [False, True], ids=["auth-optional", "auth-required"])
@pytest.mark.parametrize("source", ["query", "bearer", "subprotocol"])
async def test_ws_valid_token_accepted_from_every_source(ws_app, realtime, source, required):
    realtime(websocket_auth_required=required)
    communicator, subprotocol, first = await ws_open(ws_app, present_token(token_for("u1", name="Ivan"), source))
    assert greeting_of(first)["data"]["user_id"] == "u1"
    # the subprotocol pair is answered with `access_token`, never with the token itself
    assert subprotocol == ("access_token" if source == "subprotocol" else None)
    assert (await request(communicator, "ping"))["type"] == "pong"
    await communicator.disconnect()


async def test_ws_subprotocol_pair_with_other_protocols_still_selects_access_token(ws_app):
    presented = Presented(subprotocols=["chat.v1", "access_token", token_for("u9")])
    communicator, subprotocol, first = await ws_open(ws_app, presented)
    assert subprotocol == "access_token"
    assert greeting_of(first)["data"]["user_id"] == "u9"
    await communicator.disconnect()


@pytest.mark.parametrize("required", [False, True], ids=["auth-optional", "auth-required"])
@pytest.mark.parametrize("source", ["query", "header"])
async def test_ws_valid_api_key_accepted_as_admin(ws_app, realtime, source, required):
    realtime(websocket_auth_required=required, ws_api_keys=("other-key", API_KEY))
    communicator, _, first = await ws_open(ws_app, present_api_key(API_KEY, source))
    assert greeting_of(first)["data"]["user_id"] is None
    # an API key is an admin: private channels are open to it
    assert (await request(communicator, "subscribe", {"channel": "private-ops"}))["type"] == "subscribed"
    await communicator.disconnect()


async def test_ws_api_key_header_name_follows_ws_api_key_header(ws_app, realtime):
    realtime(ws_api_keys=(API_KEY,), ws_api_key_header="X-Service-Key")
    _, _, first = await ws_open(ws_app, Presented(headers=[(b"x-service-key", API_KEY.encode())]))
    greeting_of(first)
    _, _, first = await ws_open(ws_app, Presented(headers=[(b"x-service-key", b"nope")]))
    assert_closed(first, 4401)


def test_api_key_header_name_follows_ws_api_key_header_on_the_api(client, realtime):
    realtime(ws_api_keys=(API_KEY,), ws_api_key_header="X-Service-Key", api_auth_required=True)
    assert client.get("/ws/stats", HTTP_X_SERVICE_KEY=API_KEY).status_code == 200
    assert client.get("/ws/stats", HTTP_X_SERVICE_KEY="nope").status_code == 401
    assert client.get("/ws/stats", HTTP_X_API_KEY=API_KEY).status_code == 401  # the default header is not read


@pytest.mark.parametrize("source", ["query", "bearer"])
@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_sse_bad_token_gets_401_before_any_stream(ws_app, with_api_key, kind, source):
    status, headers, body = await sse_open(ws_app, present_token(BAD_TOKENS[kind](), source))
    assert status == 401
    assert headers["content-type"] == "application/json"
    assert headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["type"] == "unauthenticated"


@pytest.mark.parametrize("source", ["query", "header"])
async def test_sse_wrong_api_key_gets_401(ws_app, with_api_key, source):
    status, _, body = await sse_open(ws_app, present_api_key("wrong", source))
    assert status == 401
    assert json.loads(body) == {"type": "unauthenticated", "error": "Invalid API key."}


@pytest.mark.parametrize(
    "presented",
    [
        present_token(token_for("u1"), "query"),
        present_token(token_for("u1"), "bearer"),
        present_api_key(API_KEY, "query"),
        present_api_key(API_KEY, "header"),
    ],
    ids=["token-query", "token-bearer", "api-key-query", "api-key-header"],
)
async def test_sse_valid_credentials_open_a_stream(ws_app, realtime, presented):
    realtime(ws_api_keys=(API_KEY,), sse_auth_required=True)
    status, headers, body = await sse_open(ws_app, presented)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body.startswith(b"retry: ")


@pytest.mark.parametrize("required", [False, True], ids=["api-optional", "api-required"])
@pytest.mark.parametrize("source", ["query", "bearer"])
@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_api_bad_token_gets_401_json(client, realtime, bus, kind, source, required):
    realtime(api_auth_required=required, ws_api_keys=(API_KEY,))
    presented = present_token(BAD_TOKENS[kind](), source)
    suffix = f"?{presented.query}" if presented.query else ""
    responses = [
        client.post(
            "/ws/send-to-channel" + suffix,
            {"channel": "news", "message": {"content": 1}},
            content_type="application/json",
            **presented.meta(),
        ),
        client.get("/ws/stats" + suffix, **presented.meta()),
    ]
    for response in responses:
        assert response.status_code == 401, response.content
        body = response.json()
        assert body["type"] == "unauthenticated" and set(body) == {"type", "error"}
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert not bus.published, "a refused publish reaches nobody"


@pytest.mark.parametrize("source", ["query", "header"])
def test_api_wrong_api_key_gets_401_json(client, realtime, bus, source):
    realtime(ws_api_keys=(API_KEY,))
    presented = present_api_key("wrong", source)
    suffix = f"?{presented.query}" if presented.query else ""
    response = client.post(
        "/ws/send-to-channel" + suffix,
        {"channel": "news", "message": {"content": 1}},
        content_type="application/json",
        **presented.meta(),
    )
    assert response.status_code == 401
    assert response.json() == {"type": "unauthenticated", "error": "Invalid API key."}
    assert not bus.published


@pytest.mark.parametrize(
    "presented",
    [
        present_token(token_for("boss", role="admin"), "query"),
        present_token(token_for("boss", role="admin"), "bearer"),
        present_api_key(API_KEY, "query"),
        present_api_key(API_KEY, "header"),
    ],
    ids=["token-query", "token-bearer", "api-key-query", "api-key-header"],
)
def test_api_valid_admin_credentials_accepted(client, realtime, bus, presented):
    realtime(api_auth_required=True, ws_api_keys=(API_KEY,))
    suffix = f"?{presented.query}" if presented.query else ""
    assert client.get("/ws/stats" + suffix, **presented.meta()).status_code == 200
    response = client.post(
        "/ws/send-to-channel" + suffix,
        {"channel": "news", "message": {"content": 1}},
        content_type="application/json",
        **presented.meta(),
    )
    assert response.status_code == 202


# SSE through a real daphne and httpx: the refusal is an HTTP status before any byte of stream.


@pytest.fixture(scope="module")
def keyed_server(live_server_factory):
    return live_server_factory(WS_API_KEYS=API_KEY)


@pytest.mark.server
async def test_sse_over_daphne_refuses_every_bad_credential_with_401(keyed_server):
    cases = [(f"token-{kind}", {"token": make()}, {}) for kind, make in BAD_TOKENS.items()]
    cases += [(f"bearer-{kind}", {}, {"Authorization": f"Bearer {make()}"}) for kind, make in BAD_TOKENS.items()]
    cases += [("api-key-query", {"api_key": "wrong"}, {}), ("api-key-header", {}, {"X-API-Key": "wrong"})]
    async with httpx.AsyncClient(base_url=keyed_server.http, timeout=5) as http:
        for name, params, headers in cases:
            response = await http.get("/sse/connect", params=params, headers=headers)
            assert response.status_code == 401, name
            assert response.headers["content-type"] == "application/json", name
            assert response.json()["type"] == "unauthenticated", name


@pytest.mark.server
async def test_sse_over_daphne_accepts_valid_token_and_api_key(keyed_server):
    cases = [({"token": token_for("u5")}, {}, "u5"), ({}, {"X-API-Key": API_KEY}, None)]
    async with httpx.AsyncClient(base_url=keyed_server.http, timeout=5) as http:
        for params, headers, user_id in cases:
            async with http.stream("GET", "/sse/connect", params=params, headers=headers) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                received = b""
                async for chunk in response.aiter_bytes():
                    received += chunk
                    if b"event: connected" in received and received.endswith(b"\n\n"):
                        break
            (greeting,) = [data for event, data in sse_events(received) if event == "connected"]
            assert greeting["data"]["user_id"] == user_id


# ---------------------------------------------------------------------------------------------
# 2. A transport's auth switch never opens or closes another transport


async def test_websocket_auth_required_alone_refuses_anonymous_ws_only(ws_app, configure, client):
    configure(WEBSOCKET_AUTH_REQUIRED="true", API_AUTH_REQUIRED="false")
    _, _, first = await ws_open(ws_app)
    assert_closed(first, 4401)
    assert first["reason"] == "authentication required"
    status, _, _ = await sse_open(ws_app)
    assert status == 200
    response = await sync_to_async(client.get)("/ws/stats")
    assert response.status_code == 200


async def test_sse_auth_required_alone_refuses_anonymous_sse_only(ws_app, configure, client):
    configure(SSE_AUTH_REQUIRED="true", API_AUTH_REQUIRED="false")
    status, _, body = await sse_open(ws_app)
    assert status == 401 and json.loads(body)["type"] == "unauthenticated"
    communicator, _, first = await ws_open(ws_app)
    assert greeting_of(first)["data"]["user_id"] is None
    await communicator.disconnect()
    response = await sync_to_async(client.get)("/ws/stats")
    assert response.status_code == 200


async def test_api_auth_required_alone_leaves_ws_and_sse_open(ws_app, configure, client):
    configure(API_AUTH_REQUIRED="true")
    communicator, _, first = await ws_open(ws_app)
    greeting_of(first)
    await communicator.disconnect()
    status, _, _ = await sse_open(ws_app)
    assert status == 200
    response = await sync_to_async(client.get)("/ws/stats")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"WEBSOCKET_AUTH_REQUIRED": "true"}, True),
        ({"SSE_AUTH_REQUIRED": "true"}, True),
        ({"WEBSOCKET_AUTH_REQUIRED": "true", "API_AUTH_REQUIRED": "false"}, False),
        ({"API_AUTH_REQUIRED": "true"}, True),
    ],
)
def test_api_auth_required_defaults_to_either_transport_requiring_auth(env, expected):
    assert load_config({"DJANGO_DEBUG": "true", **env}).api_auth_required is expected


def test_seed_curl_examples_work_anonymously_when_api_auth_explicitly_off(client, configure, bus):
    configure(WEBSOCKET_AUTH_REQUIRED="true", SSE_AUTH_REQUIRED="true", API_AUTH_REQUIRED="false")
    response = client.post(
        "/ws/broadcast",
        {"message": {"id": "msg-123", "type": "broadcast", "content": "Сообщение всем пользователям"}},
        content_type="application/json",
    )
    assert response.status_code == 202
    response = client.post(
        "/sse/send-to-channel",
        {"channel": "news", "event": "news_update", "data": {"title": "Новая статья"}},
        content_type="application/json",
    )
    assert response.status_code == 202


@pytest.mark.server
async def test_daphne_with_websocket_auth_required_keeps_sse_open_and_guards_api(live_server_factory):
    server = live_server_factory(WEBSOCKET_AUTH_REQUIRED="true")
    async with websockets.connect(server.ws + "/ws/connect") as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd.code == 4401
    async with httpx.AsyncClient(base_url=server.http, timeout=5) as http:
        async with http.stream("GET", "/sse/connect") as response:
            assert response.status_code == 200
        # API_AUTH_REQUIRED follows the transports by default
        assert (await http.get("/ws/stats")).status_code == 401
        valid = await http.get("/ws/stats", headers={"Authorization": f"Bearer {token_for('a', role='admin')}"})
        assert valid.status_code == 200
    async with websockets.connect(f"{server.ws}/ws/connect?token={token_for('u2')}") as socket:
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["data"]["user_id"] == "u2"
    # a browser's subprotocol pair: the handshake answers `access_token`, or the browser would fail it
    async with websockets.connect(server.ws + "/ws/connect", subprotocols=["access_token", token_for("u3")]) as socket:
        assert socket.subprotocol == "access_token"
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["data"]["user_id"] == "u3"
    bad = ["access_token", BAD_TOKENS["other_key"]()]
    async with websockets.connect(server.ws + "/ws/connect", subprotocols=bad) as socket:
        assert socket.subprotocol == "access_token"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd.code == 4401 and closed.value.rcvd.reason


# ---------------------------------------------------------------------------------------------
# 3. Channel permissions (README, "Channels")


@pytest.mark.parametrize(
    ("token_claims", "channel", "allowed"),
    [
        ({}, "private-team", False),
        ({"channels": ["private-other"]}, "private-team", False),
        ({"channels": ["private-team"]}, "private-team", True),
        ({"channels": "private-a, private-team"}, "private-team", True),
        ({"channels": ["private-*"]}, "private-team", True),
        ({"channels": ["private-t?am"]}, "private-team", True),
        ({"channels": ["private-tea"]}, "private-team", False),
        ({"channels": ["PRIVATE-TEAM"]}, "private-team", False),
        ({"channels": ["presence-*"]}, "private-team", False),
        ({"channels": ["presence-*"]}, "presence-room", True),
        ({}, "presence-room", False),
        ({"role": "admin"}, "private-team", True),
        ({"role": "admin"}, "presence-room", True),
        ({"role": "user"}, "private-team", False),
        ({"channels": ["*"]}, "user:u2", False),
        ({"role": "admin"}, "user:u2", False),
        ({}, "user:u1", True),
        ({}, "public", True),
    ],
)
async def test_ws_channel_permissions_for_subscribe_and_publish(connect, token_claims, channel, allowed):
    communicator = await connect(f"token={token_for('u1', **token_claims)}")
    reply = await request(communicator, "subscribe", {"channel": channel})
    if allowed:
        assert reply["type"] == "subscribed", reply
    else:
        assert reply["type"] == "error" and reply["content"]["type"] == "forbidden", reply
        # a refusal never closes the connection
        assert (await request(communicator, "ping"))["type"] == "pong"
    if not channel.startswith("user:"):
        await communicator.send_json_to(
            {"action": "send_to_channel", "data": {"channel": channel, "content": "x"}, "request_id": "p"}
        )
        reply = await communicator.receive_json_from(timeout=3)
        while reply.get("request_id") != "p":  # its own message and presence join, when subscribed
            assert allowed, reply
            reply = await communicator.receive_json_from(timeout=3)
        assert reply["type"] == ("ack" if allowed else "error"), reply
    await communicator.disconnect()


async def test_anonymous_ws_cannot_subscribe_to_protected_or_personal_channels(connect):
    communicator = await connect()
    for channel in ("private-x", "presence-x", "user:u1", "user:anonymous"):
        reply = await request(communicator, "subscribe", {"channel": channel})
        assert reply["content"]["type"] == "forbidden", channel
    assert (await request(communicator, "subscribe", {"channel": "public"}))["type"] == "subscribed"
    await communicator.disconnect()


async def test_staff_session_is_admin_on_ws_and_sse(ws_app, django_user_model):
    staff = await sync_to_async(django_user_model.objects.create_user)("boss", password="pw-12345678", is_staff=True)
    plain = await sync_to_async(django_user_model.objects.create_user)("joe", password="pw-12345678")
    for user, allowed in ((staff, True), (plain, False)):
        browser = Client()
        await sync_to_async(browser.force_login)(user)
        cookie = [(b"cookie", f"sessionid={browser.cookies['sessionid'].value}".encode())]
        communicator, _, first = await ws_open(ws_app, Presented(headers=cookie))
        assert greeting_of(first)["data"]["user_id"] == str(user.pk)
        reply = await request(communicator, "subscribe", {"channel": "private-ops"})
        assert reply["type"] == ("subscribed" if allowed else "error"), reply
        await communicator.disconnect()
        status, _, _ = await sse_open(ws_app, Presented(headers=cookie), query="channels=private-ops")
        assert status == (200 if allowed else 403)


async def test_broadcast_is_not_published_by_any_client_not_even_an_admin(connect, realtime):
    realtime(ws_api_keys=(API_KEY,))
    for query in ("", f"token={token_for('boss', role='admin')}", f"api_key={API_KEY}"):
        communicator = await connect(query)
        reply = await request(communicator, "send_to_channel", {"channel": "broadcast", "content": "x"})
        assert reply["content"]["type"] == "forbidden", query
        assert await communicator.receive_nothing(timeout=0.1)
        await communicator.disconnect()


def test_broadcast_is_published_by_the_server_api(client, bus):
    response = client.post(
        "/ws/broadcast", {"message": {"content": "from the server"}}, content_type="application/json"
    )
    assert response.status_code == 202
    assert len(bus.published) == 1


async def test_presence_channel_members_get_join_and_leave(connect):
    grant = {"channels": ["presence-*"]}
    alice = await connect(f"token={token_for('alice', **grant)}")
    bob = await connect(f"token={token_for('bob', **grant)}")
    assert (await request(alice, "subscribe", {"channel": "presence-room"}))["type"] == "subscribed"
    join = await alice.receive_json_from(timeout=3)  # alice's own join
    assert join["type"] == "presence" and join["content"]["user_id"] == "alice"
    await request(bob, "subscribe", {"channel": "presence-room"})
    join = await alice.receive_json_from(timeout=3)
    assert join["type"] == "presence" and join["channel"] == "presence-room"
    assert join["content"] == {
        "event": "join",
        "user_id": "bob",
        "connection_id": bob.greeting["data"]["connection_id"],
    }
    reply = await request(alice, "presence", {"channel": "presence-room"})
    assert reply["content"]["connections"] == 2 and sorted(reply["content"]["users"]) == ["alice", "bob"]
    await bob.disconnect()
    leave = await alice.receive_json_from(timeout=3)
    assert leave["type"] == "presence" and leave["content"]["event"] == "leave"
    assert leave["content"]["user_id"] == "bob"
    await alice.disconnect()


async def test_presence_action_on_a_protected_channel_needs_a_grant(connect):
    outsider = await connect(f"token={token_for('eve')}")
    reply = await request(outsider, "presence", {"channel": "presence-room"})
    assert reply["content"]["type"] == "forbidden"
    await outsider.disconnect()


async def test_sender_is_stamped_by_the_server_for_authenticated_connections(connect):
    alice = await connect(f"token={token_for('alice')}")
    bob = await connect(f"token={token_for('bob')}")
    await request(bob, "subscribe", {"channel": "room"})
    forged = {"user_id": "admin", "connection_id": bob.greeting["data"]["connection_id"]}
    await alice.send_json_to({"action": "send_to_channel", "data": {"channel": "room", "content": 1, "sender": forged}})
    assert (await alice.receive_json_from(timeout=3))["content"]["type"] == "invalid_message"
    assert await bob.receive_nothing(timeout=0.2)
    await request(alice, "send_to_channel", {"channel": "room", "content": {"sender": forged}})
    received = await bob.receive_json_from(timeout=3)
    assert received["sender"] == {"user_id": "alice", "connection_id": alice.greeting["data"]["connection_id"]}
    await request(alice, "send_to_user", {"user_id": "bob", "content": "hi", "type": "text"})
    direct = await bob.receive_json_from(timeout=3)
    assert direct["channel"] == "user:bob" and direct["sender"]["user_id"] == "alice"
    for message_type in ("notification", "presence", "connected"):
        reply = await request(alice, "send_to_channel", {"channel": "room", "content": 1, "type": message_type})
        assert reply["content"]["type"] == "forbidden", message_type
    assert await bob.receive_nothing(timeout=0.2)
    await alice.disconnect()
    await bob.disconnect()


ATTEMPTS = 1000


async def test_a_thousand_attempts_to_read_foreign_channels_deliver_nothing(ws_app, connect, realtime, client):
    """WS subscribe, WS history, SSE connect and the history API, 1,000 tries each: nothing leaks."""
    from streaming import services

    realtime(client_rate_limit=0)
    secret = "SECRET-" + uuid.uuid4().hex
    targets = ["user:victim", "private-vault", "presence-vault"]
    for channel in targets:
        await services.apublish_to_channel(channel=channel, content=secret, persist=True)
    attacker = await connect(f"token={token_for('eve', channels=['private-vaul', 'user:victim', 'presence-other'])}")
    anonymous = await connect()
    for index in range(ATTEMPTS):
        action = "subscribe" if index % 2 else "history"
        channel = targets[index % len(targets)]
        for communicator in (attacker, anonymous):
            await communicator.send_json_to({"action": action, "data": {"channel": channel}, "request_id": index})
    for communicator in (attacker, anonymous):
        for _ in range(ATTEMPTS):
            frame = await communicator.receive_json_from(timeout=3)
            assert frame["type"] == "error" and frame["content"]["type"] == "forbidden", frame
            assert secret not in json.dumps(frame)
    # live messages on those channels do not reach them either
    for channel in targets:
        await services.apublish_to_channel(channel=channel, content=secret)
    assert await attacker.receive_nothing(timeout=0.3)
    assert await anonymous.receive_nothing(timeout=0.1)

    token = token_for("eve", channels=["private-vaul"])
    for index in range(ATTEMPTS):
        presented = Presented(query=f"token={token}") if index % 2 else Presented()
        status, _, body = await sse_open(ws_app, presented, query=f"channels={targets[index % len(targets)]}")
        assert status == 403 and secret.encode() not in body

    def read_history_over_api() -> None:
        for index in range(ATTEMPTS):
            meta = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if index % 2 else {}
            response = client.get(f"/api/channels/{targets[index % len(targets)]}/history/", **meta)
            assert response.status_code == 403 and secret.encode() not in response.content

    await sync_to_async(read_history_over_api)()
    await attacker.disconnect()
    await anonymous.disconnect()


async def test_owner_and_grantee_do_read_the_channels_the_attack_could_not(ws_app, connect, client):
    """The control of the test above: the same reads succeed for those entitled to them."""
    from streaming import services

    await services.apublish_to_channel(channel="private-vault", content="for members", persist=True)
    await services.apublish_to_channel(channel="user:victim", content="for the victim", persist=True)
    member = await connect(f"token={token_for('m', channels=['private-vault'])}")
    reply = await request(member, "history", {"channel": "private-vault"})
    assert [m["content"] for m in reply["content"]["messages"]] == ["for members"]
    victim = await connect(f"token={token_for('victim')}")
    reply = await request(victim, "history", {"channel": "user:victim"})
    assert [m["content"] for m in reply["content"]["messages"]] == ["for the victim"]
    status, _, _ = await sse_open(ws_app, Presented(query=f"token={token_for('victim')}"), query="channels=user:victim")
    assert status == 200
    response = await sync_to_async(client.get)(
        "/api/channels/private-vault/history/", HTTP_AUTHORIZATION=f"Bearer {token_for('m', channels=['private-*'])}"
    )
    assert response.status_code == 200 and response.json()["messages"][0]["content"] == "for members"
    await member.disconnect()
    await victim.disconnect()


def test_history_api_with_auth_required_needs_a_caller_with_access(client, realtime):
    realtime(api_auth_required=True)
    path = "/api/channels/private-vault/history/"
    assert client.get(path).status_code == 401
    outsider = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token_for('eve')}")
    assert outsider.status_code == 403 and outsider.json()["type"] == "forbidden"
    member = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token_for('m', channels=['private-vault'])}")
    assert member.status_code == 200 and member.json()["channel"] == "private-vault"
    own = client.get("/api/channels/user:m/history/", HTTP_AUTHORIZATION=f"Bearer {token_for('m')}")
    assert own.status_code == 200


# ---------------------------------------------------------------------------------------------
# 4. HTTP API permissions and token endpoints


ADMIN_ENDPOINTS = [
    ("post", "/ws/send-to-channel", {"channel": "news", "message": {"content": 1}}, 202),
    ("post", "/ws/broadcast", {"message": {"content": 1}}, 202),
    ("post", "/ws/send-to-user", {"user_id": "u1", "message": {"content": 1}}, 202),
    ("post", "/sse/send-to-channel", {"channel": "news", "event": "e", "data": 1}, 202),
    ("post", "/sse/notification", {"title": "t", "content": "c", "type": "info"}, 202),
    ("get", "/ws/stats", None, 200),
    ("get", "/ws/connections", None, 200),
    ("delete", "/ws/connections/00000000-0000-4000-8000-000000000000", None, 404),
]


def call(client, method: str, path: str, body, **meta):
    if method == "post":
        return client.post(path, body, content_type="application/json", **meta)
    return getattr(client, method)(path, **meta)


@pytest.mark.parametrize(("method", "path", "body", "ok"), ADMIN_ENDPOINTS)
def test_api_with_auth_required_needs_an_admin(client, realtime, bus, django_user_model, method, path, body, ok):
    realtime(api_auth_required=True, ws_api_keys=(API_KEY,))
    anonymous = call(client, method, path, body)
    assert anonymous.status_code == 401 and anonymous.json()["type"] == "unauthenticated"
    user = call(client, method, path, body, HTTP_AUTHORIZATION=f"Bearer {token_for('u1', role='user')}")
    assert user.status_code == 403 and user.json()["type"] == "forbidden"
    assert set(user.json()) == {"type", "error"}
    admin = call(client, method, path, body, HTTP_AUTHORIZATION=f"Bearer {token_for('a1', role='admin')}")
    assert admin.status_code == ok, admin.content
    assert call(client, method, path, body, HTTP_X_API_KEY=API_KEY).status_code == ok
    plain = django_user_model.objects.create_user("joe", password="pw-12345678")
    client.force_login(plain)
    assert call(client, method, path, body).status_code == 403
    staff = django_user_model.objects.create_user("boss", password="pw-12345678", is_staff=True)
    client.force_login(staff)
    assert call(client, method, path, body).status_code == ok


def test_token_endpoints_work_with_a_django_user(client, realtime, django_user_model):
    realtime(api_auth_required=True)
    django_user_model.objects.create_user("ivan", password="pw-12345678", is_staff=True)
    django_user_model.objects.create_user("olga", password="pw-12345678")
    obtained = client.post(
        "/api/token/", {"username": "ivan", "password": "pw-12345678"}, content_type="application/json"
    )
    assert obtained.status_code == 200, obtained.content
    pair = obtained.json()
    access = jwt.decode(pair["access"], SIGNING_KEY, algorithms=["HS256"])
    assert access["name"] == "ivan" and access["role"] == "admin" and access["token_type"] == "access"
    olga = client.post("/api/token/", {"username": "olga", "password": "pw-12345678"}, content_type="application/json")
    assert jwt.decode(olga.json()["access"], SIGNING_KEY, algorithms=["HS256"])["role"] == "user"
    wrong = client.post("/api/token/", {"username": "ivan", "password": "nope"}, content_type="application/json")
    assert wrong.status_code == 401 and wrong.json()["type"] == "unauthenticated"

    refreshed = client.post("/api/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json")
    assert refreshed.status_code == 200
    new_access = jwt.decode(refreshed.json()["access"], SIGNING_KEY, algorithms=["HS256"])
    assert new_access["role"] == "admin" and new_access["name"] == "ivan"
    bad_refresh = client.post("/api/token/refresh/", {"refresh": pair["access"]}, content_type="application/json")
    assert bad_refresh.status_code == 401 and bad_refresh.json()["type"] == "unauthenticated"

    verified = client.post("/api/token/verify/", {"token": pair["access"]}, content_type="application/json")
    assert verified.status_code == 200
    for kind in ("expired", "other_key", "alg_none", "garbage"):
        refused = client.post("/api/token/verify/", {"token": BAD_TOKENS[kind]()}, content_type="application/json")
        assert refused.status_code == 401, kind
        assert refused.json()["type"] == "unauthenticated", kind
    # the obtained access token is an admin on the API
    assert client.get("/ws/stats", HTTP_AUTHORIZATION=f"Bearer {pair['access']}").status_code == 200


def test_token_verify_error_is_a_sentence_not_a_repr(client):
    refused = client.post("/api/token/verify/", {"token": "garbage"}, content_type="application/json")
    assert refused.status_code == 401
    body = refused.json()
    assert body == {"type": "unauthenticated", "error": "Token is invalid"}, body


def test_refresh_reads_the_role_from_the_user_as_they_are_now(client, django_user_model):
    staff = django_user_model.objects.create_user("ivan", password="pw-12345678", is_staff=True)
    pair = client.post(
        "/api/token/", {"username": "ivan", "password": "pw-12345678"}, content_type="application/json"
    ).json()
    staff.is_staff = False
    staff.save()
    refreshed = client.post("/api/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json")
    assert refreshed.status_code == 200
    assert jwt.decode(refreshed.json()["access"], SIGNING_KEY, algorithms=["HS256"])["role"] == "user"
    staff.is_active = False
    staff.save()
    inactive = client.post("/api/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json")
    assert inactive.status_code == 401 and inactive.json()["type"] == "unauthenticated"
    staff.delete()
    deleted = client.post("/api/token/refresh/", {"refresh": pair["refresh"]}, content_type="application/json")
    assert deleted.status_code == 401 and deleted.json()["type"] == "unauthenticated"


async def test_obtained_access_token_works_on_ws(ws_app, client, django_user_model):
    staff = await sync_to_async(django_user_model.objects.create_user)("ivan", password="pw-12345678", is_staff=True)
    obtained = await sync_to_async(client.post)(
        "/api/token/", {"username": "ivan", "password": "pw-12345678"}, content_type="application/json"
    )
    pair = obtained.json()
    communicator, _, first = await ws_open(ws_app, Presented(subprotocols=["access_token", pair["access"]]))
    assert greeting_of(first)["data"]["user_id"] == str(staff.pk)
    assert (await request(communicator, "subscribe", {"channel": "private-ops"}))["type"] == "subscribed"
    await communicator.disconnect()
    _, _, first = await ws_open(ws_app, Presented(query=f"token={pair['refresh']}"))
    assert_closed(first, 4401)


# ---------------------------------------------------------------------------------------------
# 8. Token refresh over WS, and expiry


def short_lived(user_id: str, seconds: int = 2) -> str:
    return jwt.encode(claims(sub=user_id, exp=int(time.time()) + seconds), SIGNING_KEY, algorithm="HS256")


async def test_refresh_keeps_connection_open_past_expiry_and_expiry_closes_4401(connect, realtime):
    realtime(registry_flush_interval=0.05)
    kept = await connect(f"token={short_lived('u1')}")
    lapsing = await connect(f"token={short_lived('u1')}")
    reply = await request(kept, "refresh", {"token": token_for("u1")}, request_id="f1")
    assert reply["type"] == "refreshed" and reply["request_id"] == "f1"
    assert reply["content"]["expires_at"] > time.time() + 60
    other = await request(lapsing, "refresh", {"token": token_for("u2")})
    assert other["type"] == "error" and other["content"]["type"] == "forbidden"
    invalid = await request(lapsing, "refresh", {"token": BAD_TOKENS["expired"]()})
    assert invalid["type"] == "error" and invalid["content"]["type"] == "unauthenticated"
    refresh_as_access = await request(lapsing, "refresh", {"token": refresh_token_for("u1")})
    assert refresh_as_access["type"] == "error"
    closed = await lapsing.receive_output(timeout=4)
    assert closed == {"type": "websocket.close", "code": 4401, "reason": "token expired"}
    assert (await request(kept, "ping"))["type"] == "pong"
    assert (await kept.receive_nothing(timeout=0.2)) is True
    await kept.disconnect()


async def test_refresh_leaves_channels_the_new_token_does_not_grant(connect, ws_app):
    from streaming import services

    communicator = await connect(f"token={token_for('u1', channels=['private-a', 'private-b'])}")
    for channel in ("private-a", "private-b", "public"):
        assert (await request(communicator, "subscribe", {"channel": channel}))["type"] == "subscribed"
    reply = await request(communicator, "refresh", {"token": token_for("u1", channels=["private-a"])}, "f")
    assert reply["type"] == "refreshed"
    left = await communicator.receive_json_from(timeout=3)
    assert left["type"] == "unsubscribed" and left["content"]["channel"] == "private-b"
    assert "private-b" in left["content"]["reason"]
    for channel in ("private-a", "private-b", "public"):
        await services.apublish_to_channel(channel=channel, content=channel)
    received = [(await communicator.receive_json_from(timeout=3))["content"] for _ in range(2)]
    assert received == ["private-a", "public"]
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_refresh_needs_a_token_connection(connect):
    anonymous = await connect()
    reply = await request(anonymous, "refresh", {"token": token_for("u1")})
    assert reply["type"] == "error" and reply["content"]["type"] == "forbidden"
    assert anonymous.greeting["data"]["user_id"] is None
    await anonymous.disconnect()


async def test_expired_sse_stream_ends_with_stream_error(ws_app, realtime):
    realtime(registry_flush_interval=0.05)
    scope_query = f"token={short_lived('u1', seconds=1)}"
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/sse/connect",
        "raw_path": b"/sse/connect",
        "query_string": scope_query.encode(),
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(ws_app, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    assert (await communicator.receive_output(timeout=3))["status"] == 200
    received = b""
    while True:
        chunk = await communicator.receive_output(timeout=4)
        received += chunk["body"]
        if not chunk.get("more_body"):
            break
    assert b"event: stream-error" in received and b"unauthenticated" in received
    await communicator.wait(timeout=3)


def test_a_token_is_verified_once_until_it_expires(monkeypatch):
    from streaming import auth

    calls = []
    real = auth.Authenticator._verify_token
    monkeypatch.setattr(auth.Authenticator, "_verify_token", lambda self, raw: calls.append(raw) or real(self, raw))
    checker = auth.Authenticator()
    fresh, lapsing = token_for("cached"), short_lived("lapsing", seconds=1)
    assert checker.verify_token(fresh).user_id == checker.verify_token(fresh).user_id == "cached"
    assert calls == [fresh]
    checker.verify_token(lapsing)
    time.sleep(1.1)
    with pytest.raises(auth.Unauthenticated):  # expired since: verified again, and refused
        checker.verify_token(lapsing)
    assert calls == [fresh, lapsing, lapsing]
