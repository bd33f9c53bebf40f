"""Tokens and API keys never reach a log line: the redacting filter, daphne's access log, and the product's own logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid

import httpx
import pytest
import websockets
from channels.testing import WebsocketCommunicator

from streaming.auth import authenticator
from streaming.logs import REDACTED, RedactingAccessLog, RedactSecretsFilter, redact

pytestmark = pytest.mark.django_db(transaction=True)

MARKER_KEY = "apikey-MARKER-" + uuid.uuid4().hex


def marker_token(user_id: str = "marker-user") -> str:
    return authenticator.create_access_token({"sub": user_id, "name": "MARKER-" + uuid.uuid4().hex})


# ---------------------------------------------------------------------------------------------
# redact() and the filter


@pytest.mark.parametrize(
    "template",
    [
        'GET /ws/connect?token={secret} HTTP/1.1" 101',
        "GET /sse/connect?channels=news&token={secret}&lastEventId=news:4",
        "WSCONNECT /ws/connect?api_key={secret}",
        "GET /ws/stats?apikey={secret}",
        "GET /x?access_token={secret}&a=b",
        "Authorization: Bearer {secret}",
        "authorization: bearer {secret}",
        "X-API-Key: {secret}",
        '{{"X-API-Key": "{secret}"}}',
        "refresh={secret}",
        "password={secret}",
        "GET /ws/connect?api%5Fkey={secret} HTTP/1.1",
        "GET /ws/connect?%74oken={secret}&a=b",
        "GET /sse/connect?channels=a&%54OKEN={secret}",
        "GET /sse/connect?last%45ventId={secret}",
    ],
)
def test_redact_removes_credentials(template):
    secret = "s3cr3t-" + uuid.uuid4().hex
    line = template.format(secret=secret)
    cleaned = redact(line)
    assert secret not in cleaned
    assert REDACTED in cleaned


def test_redact_removes_a_jwt_anywhere_in_a_line():
    token = marker_token()
    for line in (f"subprotocols ['access_token', '{token}']", f"frame {{'token': '{token}'}}", token):
        assert token not in redact(line)
        assert token.split(".")[2] not in redact(line)


def test_redact_keeps_lines_without_credentials():
    line = 'GET /ws/stats?transport=ws&channel=news HTTP/1.1" 200 512'
    assert redact(line) == line


def test_filter_redacts_message_args_and_exception_text():
    token = marker_token()
    logger = logging.getLogger("tests.redaction")
    stream = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.append(self.format(record))

    handler = ListHandler()
    handler.addFilter(RedactSecretsFilter())
    logger.addHandler(handler)
    try:
        logger.warning("connect from %s with ?token=%s", "1.2.3.4", token)
        try:
            raise ValueError(f"bad token {token}")
        except ValueError:
            logger.exception("failed with api_key=%s", MARKER_KEY)
    finally:
        logger.removeHandler(handler)
    text = "\n".join(stream)
    assert "1.2.3.4" in text and "ValueError" in text
    assert token not in text and MARKER_KEY not in text


def test_access_log_redacts_query_string(tmp_path):
    token = marker_token()
    path = tmp_path / "access.log"
    with path.open("w") as stream:
        log = RedactingAccessLog(stream)
        log("websocket", "connecting", {"path": f"/ws/connect?token={token}", "client": "127.0.0.1:5000"})
        details = {"method": "GET", "path": f"/sse/connect?api_key={MARKER_KEY}", "client": "127.0.0.1:5000"}
        log("http", "complete", {**details, "status": 200, "size": 10})
    text = path.read_text()
    assert "/ws/connect" in text and "/sse/connect" in text
    assert token not in text and MARKER_KEY not in text


# ---------------------------------------------------------------------------------------------
# A real daphne: its access log and the product's log lines


@pytest.fixture(scope="module")
def marked_server(live_server_factory):
    return live_server_factory(WS_API_KEYS=MARKER_KEY, LOG_LEVEL="DEBUG")


async def _read_sse(http: httpx.AsyncClient, url: str, **options) -> int:
    async with http.stream("GET", url, **options) as response:
        if response.status_code == 200:
            async for chunk in response.aiter_bytes():
                if b"event: connected" in chunk:
                    break
        return response.status_code


@pytest.mark.server
async def test_daphne_logs_no_token_or_api_key(marked_server):
    server = marked_server
    token, bad_token = marker_token(), "garbage-MARKER-" + uuid.uuid4().hex
    forged = authenticator.create_access_token({"sub": "x"})[:-4] + "AAAA"  # bad signature
    secrets = [token, token.split(".")[2], MARKER_KEY, bad_token, forged]

    for query in (f"token={token}", f"api_key={MARKER_KEY}"):
        async with websockets.connect(f"{server.ws}/ws/connect?{query}") as socket:
            await asyncio.wait_for(socket.recv(), 5)
    async with websockets.connect(server.ws + "/ws/connect", subprotocols=["access_token", token]) as socket:
        await asyncio.wait_for(socket.recv(), 5)
    for query in (f"token={bad_token}", f"token={forged}", f"api_key={MARKER_KEY}x"):
        async with websockets.connect(f"{server.ws}/ws/connect?{query}") as socket:
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(socket.recv(), 5)
    async with httpx.AsyncClient(base_url=server.http, timeout=5) as http:
        assert await _read_sse(http, f"/sse/connect?token={token}") == 200
        assert await _read_sse(http, f"/sse/connect?api_key={MARKER_KEY}") == 200
        assert await _read_sse(http, f"/sse/connect?token={bad_token}") == 401
        assert await _read_sse(http, "/sse/connect", headers={"Authorization": f"Bearer {forged}"}) == 401
        assert (await http.get(f"/ws/stats?api_key={MARKER_KEY}")).status_code == 200
        assert (await http.get(f"/ws/stats?token={bad_token}")).status_code == 401
        assert (await http.get("/ws/stats", headers={"X-API-Key": MARKER_KEY + "x"})).status_code == 401
    await asyncio.sleep(0.5)  # let daphne flush its access log

    log = server.log()
    # the access log did record these requests, with the credentials blanked out
    assert "/sse/connect" in log and "/ws/stats" in log and "/ws/connect" in log
    assert REDACTED in log
    for secret in secrets:
        assert secret not in log, f"secret leaked into the server log:\n{log}"


async def test_in_process_log_records_carry_no_credentials(ws_app, realtime, caplog, client):
    """Every record the product emits (before any handler filter) is free of credentials."""
    from asgiref.sync import sync_to_async

    realtime(ws_api_keys=(MARKER_KEY,))
    caplog.set_level(logging.DEBUG)
    token, bad_token = marker_token(), "garbage-MARKER-" + uuid.uuid4().hex
    attempts = [
        ("", f"token={token}", []),
        ("", f"api_key={MARKER_KEY}", []),
        ("", "", [(b"authorization", f"Bearer {token}".encode())]),
        ("", "", [(b"x-api-key", MARKER_KEY.encode())]),
        ("bad", f"token={bad_token}", []),
        ("bad", f"api_key={MARKER_KEY}x", []),
        ("bad", f"token={token[:-3]}abc", []),
    ]
    for kind, query, headers in attempts:
        communicator = WebsocketCommunicator(ws_app, f"/ws/connect?{query}", headers=headers)
        await communicator.connect(timeout=3)
        output = await communicator.receive_output(timeout=3)
        assert (output["type"] == "websocket.close") is (kind == "bad")
        if kind != "bad":
            await communicator.send_json_to({"action": "refresh", "data": {"token": bad_token}})
            await communicator.receive_json_from(timeout=3)
            await communicator.disconnect()
    for path in (f"/ws/stats?token={bad_token}", f"/ws/stats?api_key={MARKER_KEY}x", f"/ws/stats?token={token}"):
        await sync_to_async(client.get)(path)
    records = [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    assert any("connect id=" in line for line in records), "the product did log these connections"
    for secret in (token, token.split(".")[2], MARKER_KEY, bad_token):
        leaked = [line for line in records if secret in line]
        assert not leaked, leaked


def test_server_entry_point_installs_the_redacting_access_log(monkeypatch):
    """`python -m realtime_project.server` (what the tests' daphne runs) swaps in the redacting log."""
    from daphne import cli

    from realtime_project import server

    seen = {}

    class FakeCLI:
        def run(self, argv):
            seen["access_log"] = cli.AccessLogGenerator
            seen["argv"] = argv

    monkeypatch.setattr(cli, "CommandLineInterface", FakeCLI)
    monkeypatch.setattr(cli, "AccessLogGenerator", cli.AccessLogGenerator)
    monkeypatch.setattr(sys, "argv", ["server", "-p", "1"])
    server.main()
    assert seen == {"access_log": RedactingAccessLog, "argv": ["-e", "tcp:port=1:interface=127.0.0.1:backlog=4096"]}


_URL_PASSWORDS: list[str] = []


def _settings_with_passwords_in_urls(settings) -> None:
    """Secrets that appear nowhere in the failing frame's source or locals, only in settings."""
    import dataclasses

    db_password, redis_password = "db-" + uuid.uuid4().hex, "redis-" + uuid.uuid4().hex
    settings.REALTIME = dataclasses.replace(
        settings.REALTIME,
        database_url=f"postgres://app:{db_password}@db:5432/app",
        redis_urls=(f"redis://:{redis_password}@cache:6379/0",),
    )
    settings.CHANNEL_LAYERS = {"default": {"CONFIG": {"hosts": [f"redis://:{redis_password}@cache:6379/0"]}}}
    _URL_PASSWORDS[:] = [db_password, redis_password]


def test_debug_error_page_hides_passwords_in_urls(settings, rf):
    import sys

    from django.views.debug import technical_500_response

    settings.DEBUG = True
    _settings_with_passwords_in_urls(settings)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        page = technical_500_response(rf.get("/x"), *sys.exc_info()).content.decode()
    assert "boom" in page and "postgres://app:" in page and "cache:6379" in page
    assert all(password not in page for password in _URL_PASSWORDS)
