"""The security matrix against real daphne processes: what tests/streaming/ does not already do.

Already covered there, and counted in docs/RELIABILITY.md: the JWT attack set (alg none, wrong
key, RS256/HS256 confusion, expired, future nbf, refresh as access, garbage, …) × every credential
source on WebSocket (in-process), SSE (in-process and over daphne) and two API endpoints
(tests/streaming/test_auth.py); 1,000 attempts to read another user's or a private channel on WS,
SSE and the history API (`test_a_thousand_attempts_to_read_foreign_channels_deliver_nothing`);
Origin rules (tests/streaming/test_security.py); one server's logs (tests/streaming/test_logs.py).

Here: the attack set over a real WebSocket handshake and against every operation of the OpenAPI
schema; Origin spoofs over real sockets; no `==` on key material anywhere in the product; and,
last of every run, no credential in the log of any server or nginx the run started.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
import statistics
import time
from pathlib import Path

import httpx
import pytest
import websockets

from streaming.auth import authenticator
from streaming.errors import Unauthenticated
from tests.streaming.test_auth import BAD_TOKENS
from tests.support.nginx import Nginx
from tests.support.server import ROOT, LiveServer

pytestmark = pytest.mark.server

API_KEY = "matrix-api-key-0123456789abcdef"


@pytest.fixture(scope="module")
def guarded(live_server_factory):
    return live_server_factory(API_AUTH_REQUIRED="true", WS_API_KEYS=API_KEY)


# ---------------------------------------------------------------------------------------------
# The JWT attack set over real sockets and every API operation


@pytest.mark.parametrize("source", ["query", "bearer", "subprotocol"])
async def test_every_bad_token_is_refused_by_a_real_websocket_handshake(guarded, source, figure):
    refused = 0
    for kind, make in BAD_TOKENS.items():
        token = make()
        options: dict = {}
        url = guarded.ws + "/ws/connect"
        if source == "query":
            url += f"?token={token}"
        elif source == "bearer":
            options["additional_headers"] = {"Authorization": f"Bearer {token}"}
        else:
            options["subprotocols"] = ["access_token", token]
        try:
            socket = await websockets.connect(url, **options)
        except websockets.InvalidHandshake:
            refused += 1  # the subprotocol was not echoed: refused before any frame
            continue
        async with socket:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                frame = await asyncio.wait_for(socket.recv(), 5)
                pytest.fail(f"{kind} via {source} got a frame: {frame}")
        assert closed.value.rcvd.code == 4401, kind
        refused += 1
    figure(**{f"ws_{source}_refused": f"{refused}/{len(BAD_TOKENS)}"})
    assert refused == len(BAD_TOKENS)


def schema_operations(server: LiveServer) -> list[tuple[str, str]]:
    """(method, concrete path) of every operation in the server's OpenAPI schema."""
    schema = httpx.get(server.http + "/api/schema/?format=json").json()
    fill = {"name": "news", "connection_id": "missing", "notification_id": "1"}
    return [
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)], path))
        for path, operations in schema["paths"].items()
        for method in operations
    ]


@pytest.mark.parametrize("how", ["bearer", "query"])
def test_every_bad_token_gets_401_from_every_api_operation(guarded, how, figure):
    operations = schema_operations(guarded)
    public = {"/api/token/", "/api/token/refresh/", "/api/token/verify/"}  # no credentials read
    refused = 0
    with httpx.Client(base_url=guarded.http, timeout=10) as http:
        for method, path in operations:
            if path in public:
                continue
            for kind, make in BAD_TOKENS.items():
                token = make()
                headers = {"Authorization": f"Bearer {token}"} if how == "bearer" else {}
                params = {"token": token} if how == "query" else {}
                response = http.request(method, path, headers=headers, params=params, json={})
                assert response.status_code == 401, (method, path, kind, response.text)
                assert response.json()["type"] == "unauthenticated"
                refused += 1
            response = http.request(method, path, headers={"X-API-Key": API_KEY + "x"}, json={})
            assert response.status_code == 401, (method, path, "wrong api key")
            response = http.request(method, path, json={})
            assert response.status_code in (401, 403), (method, path, "no credentials")
            refused += 2
    figure(**{f"api_{how}_refused": refused, "api_operations": len(operations) - len(public)})


# ---------------------------------------------------------------------------------------------
# Origin spoofing


SPOOFS = [
    "https://evil.example", "http://127.0.0.1.evil.example", "http://localhost.evil.example",
    "http://127.0.0.1@evil.example", "http://localhost:8000@evil.example", "http://evil.example#@localhost",
    "http://evil.example/http://127.0.0.1", "http://evil.example?.localhost", "null", "file://localhost",
    "ws://localhost", "chrome-extension://localhost", "http://LOCALHOST.EVIL.EXAMPLE",
    "http://xn--lcalhost-2ya.example", "http://127.0.0.2", "http://0x7f.0.0.1", "http://[::1].evil.example",
]  # fmt: skip


@pytest.mark.parametrize("origin", SPOOFS)
async def test_a_spoofed_origin_is_refused_on_both_transports(guarded, origin):
    async with websockets.connect(guarded.ws + "/ws/connect", origin=origin) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd.code == 4403
    async with httpx.AsyncClient(base_url=guarded.http, timeout=5) as http:
        response = await http.get("/sse/connect", headers={"Origin": origin})
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", ["http://localhost:8000", "http://127.0.0.1:3000", "http://[::1]:8000"])
async def test_a_real_origin_is_admitted_on_both_transports(guarded, origin):
    """The control of the test above."""
    async with websockets.connect(guarded.ws + "/ws/connect", origin=origin) as socket:
        assert '"connected"' in await asyncio.wait_for(socket.recv(), 5)
    async with (
        httpx.AsyncClient(base_url=guarded.http, timeout=5) as http,
        http.stream("GET", "/sse/connect", headers={"Origin": origin}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin


# ---------------------------------------------------------------------------------------------
# API keys: constant time


KEY_MATERIAL = re.compile(r"api_?key|secret|signing_key|password", re.IGNORECASE)


def names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def test_no_key_material_is_compared_with_eq_or_in_anywhere_in_the_product():
    """`==`, `!=`, `in` on secrets leak their length or prefix in time; only hmac.compare_digest."""
    offenders = []
    for path in [
        *ROOT.glob("streaming/**/*.py"),
        *ROOT.glob("realtime_project/*.py"),
        *ROOT.glob("notifications/*.py"),
    ]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops
            ):
                touched = {name for operand in (node.left, *node.comparators) for name in names_in(operand)}
                if any(name.startswith("DEV_") for name in touched):
                    continue  # start-up check of the configuration against the public development keys
                if any(KEY_MATERIAL.search(name) for name in touched):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)
    verify = ast.unparse(next(
        n for n in ast.walk(ast.parse((ROOT / "streaming/auth.py").read_text()))
        if isinstance(n, ast.FunctionDef) and n.name == "verify_api_key"
    ))  # fmt: skip
    assert "compare_digest" in verify


@pytest.mark.reliability
def test_api_key_check_takes_the_same_time_whatever_the_key(realtime, figure):
    """A timing figure to go with the static check: right key, wrong first byte, wrong last byte,
    wrong length — medians of 20 × 2,000 calls each."""
    key = "k" * 40
    realtime(ws_api_keys=(key, "another-key-0123456789abcdef0123"))
    candidates = {"right": key, "first": "x" + key[1:], "last": key[:-1] + "x", "short": "k"}
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(20):  # round-robin, so that drift of the machine hits every candidate alike
        for name, candidate in candidates.items():
            started = time.perf_counter_ns()
            for _ in range(2000):
                with contextlib.suppress(Unauthenticated):  # the wrong keys' expected path
                    authenticator.verify_api_key(candidate)
            samples[name].append((time.perf_counter_ns() - started) / 2000)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    figure(api_key_check_ns={name: round(value) for name, value in medians.items()})
    wrong = [medians["first"], medians["last"]]
    assert max(wrong) / min(wrong) < 1.25  # no early exit on the first differing byte


# ---------------------------------------------------------------------------------------------
# Every log of the run (this test is moved to the very end of the run: see conftest.py)


JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


@pytest.mark.last_of_run
@pytest.mark.parametrize("run", ["test", pytest.param("test-reliability", marks=pytest.mark.reliability)])
def test_no_credential_in_any_log_of_this_run(run, figure):
    """Every daphne and nginx log written during this run: no JWT, no configured API key."""
    logs: list[Path] = [server.log_path for server in LiveServer.started]
    logs += [path for nginx in Nginx.started for path in nginx.directory.glob("*.log")]
    keys = {key for server in LiveServer.started for key in server.env.get("WS_API_KEYS", "").split(",") if key}
    leaks, lines = [], 0
    for path in logs:
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        lines += text.count("\n")
        leaks += [f"{path}: {match}" for match in JWT.findall(text)]
        leaks += [f"{path}: API key {key[:6]}…" for key in keys if key in text]
    figure(logs_scanned=len(logs), log_lines=lines, credentials_found=len(leaks))
    assert not leaks, "\n".join(leaks[:20])
