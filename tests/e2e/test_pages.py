"""The landing page and the two transport test pages, in headless Chromium against real daphne processes.

Each test drives a page the way a person would (labels, buttons) and asserts what the page shows:
connection state, subscription states, the frame log, toasts, presence. Messages also come from the
HTTP API (httpx), and servers are killed and restarted to watch the pages reconnect and recover.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest

from streaming.auth import authenticator
from tests.e2e.browser import RECONNECT_TIMEOUT_MS, VIEWPORT, TransportPage, launch_chromium, require_chromium
from tests.support.server import LiveServer

pytestmark = pytest.mark.server

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def token_for(user_id: str) -> str:
    return authenticator.create_access_token({"sub": user_id, "channels": ["presence-*"]})


@pytest.fixture(scope="module")
def browser() -> Iterator:
    require_chromium()
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def open_page(browser) -> Iterator[Callable[[str], TransportPage]]:
    """Open a URL in a fresh browser context; the test fails on any uncaught script error."""
    contexts, errors = [], []

    def open_url(url: str) -> TransportPage:
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(url)
        return TransportPage(page)

    yield open_url
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def publisher(live_server_factory) -> LiveServer:
    """A second server on the same database: it publishes while `live_server` is down."""
    return live_server_factory()


@pytest.fixture(scope="module")
def short_history(live_server_factory) -> tuple[LiveServer, LiveServer]:
    """A server and its publisher that keep only the newest message per channel."""
    return live_server_factory(CHANNEL_HISTORY_SIZE="1"), live_server_factory(CHANNEL_HISTORY_SIZE="1")


@pytest.fixture
def restores() -> Iterator[Callable[[LiveServer], None]]:
    """Register servers a test kills: they are running again afterwards, whatever happened."""
    killed: list[LiveServer] = []
    yield killed.append
    for server in killed:
        if server.process is None or server.process.poll() is not None:
            server.start()


def post(server: LiveServer, path: str, body: dict) -> dict:
    response = httpx.post(server.http + path, json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def expect_text(locator, text, timeout: int = 10_000) -> None:
    from playwright.sync_api import expect

    expect(locator).to_contain_text(text, timeout=timeout)


def expect_connected(page: TransportPage, timeout: int = 10_000) -> None:
    from playwright.sync_api import expect

    expect(page.state).to_have_text("connected", timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Landing page


@pytest.mark.browser
def test_landing_links_both_test_pages_the_admin_and_the_api(live_server, open_page):
    from playwright.sync_api import expect

    landing = open_page(live_server.http + "/").page
    for name, href in [
        ("WebSocket test page", "/ws/test-page"),
        ("SSE test page", "/sse/test"),
        ("Admin", "/admin/"),
        ("API root", "/api/"),
        ("API docs", "/api/docs/"),
    ]:
        expect(landing.locator("main").get_by_role("link", name=name, exact=True)).to_have_attribute("href", href)
    expect(landing.locator(".destination code").first).to_have_text(f"ws://127.0.0.1:{live_server.port}/ws/connect")
    landing.locator("main").get_by_role("link", name="WebSocket test page").click()
    expect(landing.get_by_role("heading", level=1)).to_have_text("WebSocket test page")
    assert landing.url == live_server.http + "/ws/test-page"


def test_disabled_transport_has_no_test_page_and_no_landing_link(live_server_factory):
    server = live_server_factory(WEBSOCKET_ENABLED="false", SSE_ENABLED="false")
    assert httpx.get(server.http + "/ws/test-page").status_code == 404
    assert httpx.get(server.http + "/sse/test").status_code == 404
    landing = httpx.get(server.http + "/")
    assert landing.status_code == 200
    assert "/ws/test-page" not in landing.text and "/sse/test" not in landing.text
    assert "WEBSOCKET_ENABLED=false" in landing.text and "SSE_ENABLED=false" in landing.text
    assert 'href="/api/docs/"' in landing.text and 'href="/admin/"' in landing.text


# ---------------------------------------------------------------------------------------------
# WebSocket page


@pytest.mark.browser
def test_ws_page_connects_subscribes_and_shows_messages_from_the_page_and_the_api(live_server, open_page):
    token = token_for("alice")
    ws = open_page(live_server.http + "/ws/test-page")
    ws.connect(token=token)
    expect_connected(ws)
    expect_text(ws.fact("User"), "alice")
    assert UUID_RE.match(ws.fact("Connection id").inner_text())
    expect_text(ws.fact("Round trip"), " ms")

    ws.subscribe("news")
    expect_text(ws.subscription_state("news"), "live")
    ws.publish("news", "persisted from the page", persist=True)
    expect_text(ws.form_status("publish-form"), "offset 1")
    expect_text(ws.log, "persisted from the page")
    expect_text(ws.subscription("news"), "offset 1")

    post(live_server, "/ws/send-to-channel", {"channel": "news", "message": {"content": "published by the API"}})
    expect_text(ws.log, "published by the API")
    ws.send_to_user("alice", "a note to myself")
    expect_text(ws.log, '"channel":"user:alice","content":"a note to myself"')

    assert token not in ws.page.url
    assert token not in ws.log.inner_text()
    assert token not in ws.page.content()


@pytest.mark.browser
def test_ws_page_shows_notifications_as_toasts_coloured_by_level(live_server, open_page):
    from playwright.sync_api import expect

    ws = open_page(live_server.http + "/ws/test-page")
    ws.connect()
    expect_connected(ws)
    expect_text(ws.fact("User"), "anonymous")

    ws.notify("Disk almost full", "92% used", level="error", auto_hide=False)
    sticky = ws.toasts.filter(has_text="Disk almost full")
    expect(sticky).to_have_class(re.compile(r"\btoast-error\b"))
    post(
        live_server,
        "/sse/notification",
        {"title": "Heads up", "content": "maintenance at noon", "type": "warning", "auto_hide": True, "duration": 800},
    )
    passing = ws.toasts.filter(has_text="Heads up")
    expect(passing).to_have_class(re.compile(r"\btoast-warning\b"))
    expect(passing).to_contain_text("maintenance at noon")
    expect(passing).to_have_count(0, timeout=5_000)
    expect(sticky).to_be_visible()  # auto_hide false: it outlives the other one

    sticky.get_by_role("button", name="Dismiss notification").click()
    expect(sticky).to_have_count(0)


@pytest.mark.browser
def test_ws_page_presence_lists_a_second_connection_joining_and_leaving(live_server, open_page):
    from playwright.sync_api import expect

    alice = open_page(live_server.http + "/ws/test-page")
    alice.connect(token=token_for("alice"))
    alice.subscribe("presence-lobby")
    summary, users = alice.page.locator("#presence-summary"), alice.page.locator("#presence-users li")
    expect(summary).to_have_text("1 connection · 1 user")
    expect(users).to_have_text(["alice"])

    bob = open_page(live_server.http + "/ws/test-page")
    bob.connect(token=token_for("bob"))
    bob.subscribe("presence-lobby")
    expect(summary).to_have_text("2 connections · 2 users")
    expect(users).to_have_text(["alice", "bob"])
    expect_text(alice.log, '"event":"join","user_id":"bob"')

    bob.disconnect()
    expect(summary).to_have_text("1 connection · 1 user")
    expect(users).to_have_text(["alice"])


@pytest.mark.browser
def test_ws_page_refused_credentials_are_not_retried(live_server, open_page):
    from playwright.sync_api import expect

    ws = open_page(live_server.http + "/ws/test-page")
    ws.connect(token="not-a-jwt")
    expect(ws.state).to_have_text("refused")
    expect_text(ws.page.locator("#connection-detail"), "4401")
    expect(ws.countdown).to_be_hidden()


@pytest.mark.browser
def test_ws_page_reconnects_after_a_restart_and_recovers_what_was_persisted_meanwhile(
    live_server, publisher, open_page, restores
):
    from playwright.sync_api import expect

    ws = open_page(live_server.http + "/ws/test-page")
    ws.connect(token=token_for("alice"))
    ws.subscribe("recovery")
    expect_text(ws.subscription_state("recovery"), "live")
    post(live_server, "/ws/send-to-channel", {"channel": "recovery", "message": {"content": "before"}, "persist": True})
    expect_text(ws.subscription("recovery"), "offset 1")

    restores(live_server)
    live_server.kill()
    expect(ws.state).to_have_text("reconnecting")
    expect(ws.countdown).to_contain_text(re.compile(r"reconnecting in \d+\.\d s \(attempt \d+\)"))
    missed = {"channel": "recovery", "message": {"content": "published while the server was down"}, "persist": True}
    assert post(publisher, "/ws/send-to-channel", missed)["offset"] == 2
    live_server.restart()

    expect_connected(ws, timeout=RECONNECT_TIMEOUT_MS)
    expect_text(ws.subscription_state("recovery"), "recovered")
    expect_text(ws.subscription("recovery"), "offset 2")
    expect_text(ws.log, "published while the server was down")
    expect(ws.countdown).to_be_hidden()


@pytest.mark.browser
def test_ws_page_shows_a_gap_when_history_no_longer_reaches_back(short_history, open_page, restores):
    server, publisher = short_history
    ws = open_page(server.http + "/ws/test-page")
    ws.connect()
    ws.subscribe("ticker")
    expect_text(ws.subscription_state("ticker"), "live")
    post(server, "/ws/send-to-channel", {"channel": "ticker", "message": {"content": "tick 1"}, "persist": True})
    expect_text(ws.subscription("ticker"), "offset 1")

    restores(server)
    server.kill()
    for n in (2, 3, 4):  # history keeps one message: 2 and 3 are gone by the time the page is back
        post(
            publisher,
            "/ws/send-to-channel",
            {"channel": "ticker", "message": {"content": f"tick {n}"}, "persist": True},
        )
    server.restart()

    expect_connected(ws, timeout=RECONNECT_TIMEOUT_MS)
    expect_text(ws.subscription_state("ticker"), "gap")
    expect_text(ws.log, "tick 4")
    assert "tick 2" not in ws.log.inner_text()


# ---------------------------------------------------------------------------------------------
# SSE page


@pytest.mark.browser
def test_sse_page_streams_messages_from_the_page_and_the_api(live_server, open_page):
    token = token_for("alice")
    sse = open_page(live_server.http + "/sse/test")
    sse.subscribe("headlines")
    sse.connect(token=token)
    expect_connected(sse)
    expect_text(sse.fact("User"), "alice")
    expect_text(sse.fact("Stream channels"), "headlines, broadcast, user:alice")
    expect_text(sse.subscription_state("headlines"), "live")

    sse.publish("headlines", "persisted from the SSE page", persist=True)
    expect_text(sse.form_status("publish-form"), "offset 1")
    expect_text(sse.log, "persisted from the SSE page")
    expect_text(sse.fact("Last event id"), "headlines:1")

    post(live_server, "/sse/send-to-channel", {"channel": "headlines", "event": "message", "data": "from the API"})
    expect_text(sse.log, "from the API")
    sse.publish("headlines", '{"price": 42}', type="price")  # a custom event type: the page listens for it
    expect_text(sse.log, '"type":"price","channel":"headlines","content":{"price":42}')

    sse.subscribe("weather")  # a stream's channels are fixed: the page reopens it, resuming
    expect_text(sse.fact("Stream channels"), "headlines, weather, broadcast, user:alice")
    expect_text(sse.subscription_state("headlines"), "recovered")
    post(live_server, "/ws/send-to-channel", {"channel": "weather", "message": {"content": "sunny"}})
    expect_text(sse.log, '"channel":"weather","content":"sunny"')

    expect_text(sse.log, "token=[redacted]")
    assert token not in sse.page.url
    assert token not in sse.log.inner_text()
    assert token not in sse.page.content()


@pytest.mark.browser
def test_sse_page_shows_every_event_type_the_stream_delivers(live_server, open_page):
    """The README's own example publishes `news_update`: it shows with no list of types to fill in."""
    sse = open_page(live_server.http + "/sse/test")
    assert sse.page.locator("#connect-form").get_by_label("Also listen for event types").count() == 0
    sse.subscribe("news")
    sse.connect()
    expect_connected(sse)
    post(live_server, "/ws/send-to-channel", {"channel": "news", "message": {"type": "news_update", "content": {"title": "Hello"}}, "persist": True})  # fmt: skip
    post(live_server, "/sse/send-to-channel", {"channel": "news", "event": "quote_of_the_day", "data": "carpe diem"})
    expect_text(sse.log, '"type":"news_update","channel":"news","content":{"title":"Hello"}')
    expect_text(sse.log, '"type":"quote_of_the_day","channel":"news","content":"carpe diem"')


@pytest.mark.browser
def test_frame_log_cuts_long_frames_and_shows_their_size(live_server, open_page):
    from playwright.sync_api import expect

    ws = open_page(live_server.http + "/ws/test-page")
    ws.subscribe("bulk")
    ws.connect()
    expect_text(ws.subscription_state("bulk"), "live")
    post(live_server, "/ws/send-to-channel", {"channel": "bulk", "message": {"content": "x" * 900_000}})
    entry = ws.log.locator("li", has_text='"channel":"bulk","content":"xxx')
    more = entry.get_by_role("button", name=re.compile(r"^87\d\.\d KB in all: show$"))
    expect(more).to_be_visible()
    shown = entry.locator(".log-body").inner_text()
    assert 2000 < len(shown) < 2010 and shown.endswith("…")
    more.click()
    expect(more).to_have_count(0)
    assert len(entry.locator(".log-body").inner_text()) > 900_000


@pytest.mark.browser
def test_sse_page_shows_notifications_as_toasts_coloured_by_level(live_server, open_page):
    from playwright.sync_api import expect

    sse = open_page(live_server.http + "/sse/test")
    sse.connect(token=token_for("carol"))
    expect_connected(sse)

    post(live_server, "/sse/notification", {"title": "Welcome", "content": "hi carol", "type": "success", "user_id": "carol", "auto_hide": True, "duration": 700})  # fmt: skip
    toast = sse.toasts.filter(has_text="Welcome")
    expect(toast).to_have_class(re.compile(r"\btoast-success\b"))
    expect(toast).to_have_count(0, timeout=5_000)

    sse.notify("Build failed", "see the CI log", level="error", auto_hide=False)
    expect(sse.toasts.filter(has_text="Build failed")).to_have_class(re.compile(r"\btoast-error\b"))
    expect_text(sse.form_status("notification-form"), "sent notification #")


@pytest.mark.browser
def test_sse_page_refused_stream_shows_the_status_and_is_not_retried(live_server, open_page):
    from playwright.sync_api import expect

    sse = open_page(live_server.http + "/sse/test")
    sse.subscribe("private-payroll")
    sse.connect()  # anonymous: private channels need a grant
    expect(sse.state).to_have_text("refused")
    expect_text(sse.page.locator("#connection-detail"), "HTTP 403")
    expect(sse.countdown).to_be_hidden()


@pytest.mark.browser
def test_sse_page_reconnects_after_a_restart_and_resumes_from_the_last_event_id(
    live_server, publisher, open_page, restores
):
    from playwright.sync_api import expect

    sse = open_page(live_server.http + "/sse/test")
    sse.subscribe("resume")
    sse.connect(token=token_for("alice"))
    expect_connected(sse)
    post(
        live_server,
        "/sse/send-to-channel",
        {"channel": "resume", "event": "message", "data": "before", "persist": True},
    )
    expect_text(sse.fact("Last event id"), "resume:1")

    restores(live_server)
    live_server.kill()
    expect(sse.state).to_have_text("reconnecting")
    expect(sse.countdown).to_contain_text("reconnecting in")
    missed = {"channel": "resume", "event": "message", "data": "sent while the server was down", "persist": True}
    assert post(publisher, "/sse/send-to-channel", missed)["offset"] == 2
    live_server.restart()

    expect_connected(sse, timeout=RECONNECT_TIMEOUT_MS)
    expect_text(sse.log, "lastEventId=resume:1")
    expect_text(sse.log, "sent while the server was down")
    expect_text(sse.subscription_state("resume"), "recovered")
    expect_text(sse.fact("Last event id"), "resume:2")


@pytest.mark.browser
def test_sse_page_shows_a_gap_when_history_no_longer_reaches_back(short_history, open_page, restores):
    server, publisher = short_history
    sse = open_page(server.http + "/sse/test")
    sse.subscribe("quotes")
    sse.connect()
    expect_connected(sse)
    post(server, "/sse/send-to-channel", {"channel": "quotes", "event": "message", "data": "quote 1", "persist": True})
    expect_text(sse.fact("Last event id"), "quotes:1")

    restores(server)
    server.kill()
    for n in (2, 3, 4):
        post(publisher, "/sse/send-to-channel", {"channel": "quotes", "event": "message", "data": f"quote {n}", "persist": True})  # fmt: skip
    server.restart()

    expect_connected(sse, timeout=RECONNECT_TIMEOUT_MS)
    expect_text(sse.log, "stream-reset")
    expect_text(sse.subscription_state("quotes"), "gap")
    expect_text(sse.fact("Last event id"), "quotes:4")
