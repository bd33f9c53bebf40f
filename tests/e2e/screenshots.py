"""Screenshots of the test pages in a realistic session: `python -m tests.e2e.screenshots`.

Starts daphne (plus a second process on the same database to publish while the first restarts),
drives each page through the things it is for, and saves `docs/ws-test-page.png` and
`docs/sse-test-page.png`. Needs Chromium and Playwright, like the browser tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import django
import httpx

from tests.e2e.browser import CHROMIUM, RECONNECT_TIMEOUT_MS, TransportPage, launch_chromium
from tests.support.server import ROOT, LiveServer, migrate, sqlite_url

DOCS = ROOT / "docs"
VIEWPORT = {"width": 1440, "height": 1250}


def post(server: LiveServer, path: str, body: dict) -> None:
    httpx.post(server.http + path, json=body, timeout=10).raise_for_status()


def ws_session(
    open_page: Callable[[str], TransportPage], server: LiveServer, helper: LiveServer, token
) -> TransportPage:
    from playwright.sync_api import expect

    ws = open_page(server.http + "/ws/test-page")
    ws.connect(token=token("alice"))
    for channel in ("news", "prices"):
        ws.subscribe(channel)
    ws.publish("news", "Markets open in 5 minutes", persist=True)
    expect(ws.form_status("publish-form")).to_contain_text("offset 1")
    post(server, "/ws/send-to-channel", {"channel": "prices", "message": {"type": "quote", "content": {"symbol": "ACME", "price": 41.7}}, "persist": True})  # fmt: skip
    expect(ws.subscription("prices")).to_contain_text("offset 1")

    server.kill()
    expect(ws.state).to_have_text("reconnecting")
    post(helper, "/ws/send-to-channel", {"channel": "news", "message": {"content": "Opening bell"}, "persist": True})
    server.restart()
    expect(ws.state).to_have_text("connected", timeout=RECONNECT_TIMEOUT_MS)
    expect(ws.subscription("news").locator(".sub-state")).to_have_text("recovered")

    # Joined after the restart: the killed process's connections count as live until its liveness window ends.
    ws.subscribe("presence-lobby")
    for user in ("bob", "carol"):
        other = open_page(server.http + "/ws/test-page")
        other.connect(token=token(user))
        other.subscribe("presence-lobby")
    expect(ws.page.locator("#presence-users li")).to_have_count(3)
    ws.send_to_user("bob", "Lunch at 12?")
    ws.notify("Deploy finished", "Version 1.4 is live.", level="success", auto_hide=False)
    post(server, "/sse/notification", {"title": "Maintenance tonight", "content": "The API is read-only from 22:00 UTC.", "type": "warning", "auto_hide": False})  # fmt: skip
    expect(ws.fact("Heartbeat")).to_contain_text("last", timeout=10_000)
    return ws


def sse_session(
    open_page: Callable[[str], TransportPage], server: LiveServer, helper: LiveServer, token
) -> TransportPage:
    from playwright.sync_api import expect

    sse = open_page(server.http + "/sse/test")
    sse.subscribe("news")
    sse.connect(token=token("alice"))
    expect(sse.state).to_have_text("connected")
    sse.publish("news", "Markets open in 5 minutes", persist=True)
    expect(sse.form_status("publish-form")).to_contain_text("offset")
    sse.subscribe("prices")
    expect(sse.fact("Stream channels")).to_contain_text("prices")
    sse.publish("prices", '{"symbol": "ACME", "price": 41.7}', type="quote", persist=True)
    expect(sse.form_status("publish-form")).to_contain_text("offset")

    server.kill()
    expect(sse.state).to_have_text("reconnecting")
    post(
        helper, "/sse/send-to-channel", {"channel": "news", "event": "message", "data": "Opening bell", "persist": True}
    )
    server.restart()
    expect(sse.state).to_have_text("connected", timeout=RECONNECT_TIMEOUT_MS)
    expect(sse.subscription("news").locator(".sub-state")).to_have_text("recovered")

    post(server, "/ws/send-to-user", {"user_id": "alice", "message": {"content": "Your report is ready"}})
    sse.notify("Deploy finished", "Version 1.4 is live.", level="success", auto_hide=False)
    post(server, "/sse/notification", {"title": "Disk almost full", "content": "db-2 is at 92%.", "type": "error", "auto_hide": False})  # fmt: skip
    expect(sse.fact("Heartbeat")).to_contain_text("last", timeout=10_000)
    return sse


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "true")
    django.setup()
    from streaming.auth import authenticator

    def token(user: str) -> str:
        return authenticator.create_access_token({"sub": user, "channels": ["presence-*"]})

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"Chromium is not installed at {CHROMIUM}")
    database = sqlite_url()
    migrate(database)
    beat = {"WEBSOCKET_HEARTBEAT_INTERVAL": "3", "SSE_HEARTBEAT_INTERVAL": "3"}
    server, helper = LiveServer(database, **beat).start(), LiveServer(database).start()
    try:
        with launch_chromium() as browser:
            context = browser.new_context(viewport=VIEWPORT)

            def open_page(url: str) -> TransportPage:
                page = context.new_page()
                page.goto(url)
                return TransportPage(page)

            for name, session in (("ws-test-page", ws_session), ("sse-test-page", sse_session)):
                shown = session(open_page, server, helper, token)
                shown.page.bring_to_front()
                shown.page.evaluate("window.scrollTo(0, 0)")
                shown.page.screenshot(path=str(DOCS / f"{name}.png"), animations="disabled")
                print(f"saved docs/{name}.png")
            context.close()
    finally:
        server.kill()
        helper.kill()


if __name__ == "__main__":
    main()
