"""Real Chromium for end-to-end tests, and a driver for the transport test pages.

Chromium is Debian's (`/usr/bin/chromium`, or CHROMIUM_PATH), driven by Playwright; the tests skip
locally when either is missing, and fail under CI, where both must be there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.services import missing

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 1100}
# Reconnects back off up to a few seconds, and a daphne restart takes one or two more.
RECONNECT_TIMEOUT_MS = 30_000


def require_chromium() -> None:
    """Skip when Chromium or Playwright is missing locally; fail under CI, where both must be there."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "Playwright is not installed (pip install -r requirements-dev.txt)"
    if problem is None:
        return
    missing(problem)


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """A headless Chromium for the duration of the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class TransportPage:
    """One open test page (`/ws/test-page` or `/sse/test`), driven through its labels and buttons."""

    def __init__(self, page: Page) -> None:
        self.page = page

    # -- what the page shows -----------------------------------------------------------------

    @property
    def state(self) -> Locator:
        return self.page.locator("#connection-state")

    @property
    def countdown(self) -> Locator:
        return self.page.locator("#reconnect-countdown")

    @property
    def log(self) -> Locator:
        return self.page.locator("#frame-log")

    @property
    def toasts(self) -> Locator:
        return self.page.locator("#toasts .toast")

    def fact(self, name: str) -> Locator:
        """A value of the connection facts list: "Connection id", "User", "Heartbeat", …"""
        return self.page.locator(".facts dt", has_text=name).locator("xpath=following-sibling::dd[1]")

    def subscription(self, channel: str) -> Locator:
        return self.page.locator(f'#subscriptions li[data-channel="{channel}"]')

    def subscription_state(self, channel: str) -> Locator:
        return self.subscription(channel).locator(".sub-state")

    def form_status(self, form_id: str) -> Locator:
        return self.page.locator(f"#{form_id} .form-status")

    # -- what a user does --------------------------------------------------------------------

    def connect(self, token: str | None = None, api_key: str | None = None) -> None:
        form = self.page.locator("#connect-form")
        form.get_by_label("Access token (JWT)").fill(token or "")
        form.get_by_label("API key").fill(api_key or "")
        form.get_by_role("button", name="Connect", exact=True).click()

    def disconnect(self) -> None:
        self.page.get_by_role("button", name="Disconnect").click()

    def subscribe(self, channel: str) -> None:
        form = self.page.locator("#subscribe-form")
        form.get_by_label("Channel").fill(channel)
        form.get_by_role("button", name="Subscribe").click()

    def publish(self, channel: str, content: str, *, persist: bool = False, type: str | None = None) -> None:
        form = self.page.locator("#publish-form")
        form.get_by_label("Channel").fill(channel)
        if type is not None:
            form.get_by_label("Type").or_(form.get_by_label("Event")).fill(type)
        form.get_by_label("Content").fill(content)
        form.get_by_label("Persist (store in history)").set_checked(persist)
        form.get_by_role("button", name="Publish").click()

    def send_to_user(self, user_id: str, content: str) -> None:
        form = self.page.locator("#send-user-form")
        form.get_by_label("User id").fill(user_id)
        form.get_by_label("Content").fill(content)
        form.get_by_role("button", name="Send to user").click()

    def notify(
        self, title: str, content: str, *, level: str = "info", auto_hide: bool = True, duration: int = 5000
    ) -> None:
        form = self.page.locator("#notification-form")
        form.get_by_label("Title").fill(title)
        form.get_by_label("Message").fill(content)
        form.get_by_label("Level").select_option(level)
        form.get_by_label("Hide automatically").set_checked(auto_hide)
        form.get_by_label("Duration (ms)").fill(str(duration))
        form.get_by_role("button", name="Send notification").click()
