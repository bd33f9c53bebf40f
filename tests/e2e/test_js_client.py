"""The browser client (clients/js, served at /static/realtime/client.js) in real Chromium against
real daphne processes: delivery, recovery across a server restart, history resets (stream
epochs), server-side channels, token refresh, the SSE transport, the fallback to SSE, refusals
that stop it, and a snapshot then a subscription from its position under concurrent updates
(the example application examples/documents, on a server of its own).

Each test loads the library into a page of the server's own origin and drives it with
`page.evaluate`; what the page's handlers received is read back and asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from streaming.auth import authenticator
from tests.e2e.browser import VIEWPORT, launch_chromium, require_chromium
from tests.support.server import ADMIN_HEADERS, ROOT, LiveServer, base_env, sqlite_url

pytestmark = [pytest.mark.server, pytest.mark.browser]

# Loads the library, makes `window.client`, and records what its events and subscriptions report.
HARNESS = """async (options) => {
  const lib = await import("/static/realtime/client.js");
  const plain = (value) => JSON.parse(JSON.stringify(value ?? null, (key, item) =>
    item instanceof Error ? { name: item.name, code: item.code, message: item.message } : item));
  const log = { events: [], traces: [], received: {}, subscribed: {}, gaps: {}, resets: {}, tokens: 0 };
  const config = { url: location.origin, ...options.client };
  if (options.getToken) config.getToken = async () => { log.tokens += 1; return await window.mintToken(); };
  const client = new lib.RealtimeClient(config);
  for (const name of ["connecting", "connected", "disconnected", "error", "state"]) {
    client.on(name, (payload) => log.events.push([name, plain(payload), Date.now()]));
  }
  client.on("trace", (trace) => log.traces.push([trace.direction, trace.label, trace.text]));
  client.on("news_update", (envelope) => (log.newsUpdates ||= []).push(envelope.content));
  const watch = (subscription) => {
    const channel = subscription.channel;
    log.received[channel] = [];
    log.subscribed[channel] = [];
    log.gaps[channel] = 0;
    log.resets[channel] = [];
    subscription.on("message", (envelope) => log.received[channel].push(envelope.content));
    subscription.on("subscribed", (context) => log.subscribed[channel].push(plain(context)));
    subscription.on("gap", () => (log.gaps[channel] += 1));
    subscription.on("stream-reset", (context) => log.resets[channel].push(plain(context)));
    return subscription;
  };
  window.track = (channel) => watch(client.subscribe(channel));
  window.follow = (channel) => watch(client.getSubscription(channel));  // a server-side subscription
  window.lib = lib;
  window.client = client;
  window.log = log;
  window.plain = plain;
}"""


def token_for(user_id: str, seconds: int | None = None) -> str:
    if seconds is None:
        return authenticator.create_access_token({"sub": user_id})
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken()
    token.set_exp(lifetime=timedelta(seconds=seconds))
    token["sub"] = user_id
    return str(token)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    require_chromium()
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def new_page(browser) -> Iterator[Callable]:
    """A page on a server's origin with the library loaded; the test fails on any uncaught script error."""
    contexts, errors = [], []

    def open_page(server: LiveServer, *, get_token: Callable[[], str] | None = None, **client):
        context = browser.new_context(viewport=VIEWPORT)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(error))
        if get_token is not None:
            page.expose_function("mintToken", get_token)
        page.goto(server.http + "/")  # a page of the server's own origin, as a site's pages would be
        page.evaluate(HARNESS, {"client": client, "getToken": get_token is not None})
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def publisher(live_server_factory) -> LiveServer:
    """A second server on the same database: it publishes while `live_server` is down."""
    return live_server_factory()


@pytest.fixture
def restores() -> Iterator[Callable[[LiveServer], None]]:
    killed: list[LiveServer] = []
    yield killed.append
    for server in killed:
        if server.process is None or server.process.poll() is not None:
            server.start()


def post(server: LiveServer, channel: str, content, *, persist: bool = False, type: str | None = None) -> dict:
    message = {"content": content} | ({"type": type} if type else {})
    response = httpx.post(server.http + "/ws/send-to-channel", json={"channel": channel, "message": message, "persist": persist}, timeout=10)  # fmt: skip
    assert response.status_code == 202, response.text
    return response.json()


def reset_history(server: LiveServer, channel: str) -> str:
    """Reset a channel's history with the admin API; returns the new epoch."""
    response = httpx.delete(f"{server.http}/api/channels/{channel}/history/", headers=ADMIN_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["offset"] == 0
    return response.json()["epoch"]


def position(page, channel: str) -> list:
    """A subscription's [position, epoch]."""
    return page.evaluate("(c) => [client.getSubscription(c).position, client.getSubscription(c).epoch]", channel)


def wait_for(page, expression: str, timeout: int = 15_000) -> None:
    page.wait_for_function(expression, timeout=timeout)


def events(page, name: str) -> list:
    return page.evaluate("(name) => log.events.filter(([n]) => n === name).map(([, p]) => p)", name)


def connect(page) -> None:
    page.evaluate("client.connect()")
    wait_for(page, "client.state === 'connected'")


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_js_client_delivers_messages_published_over_http_to_its_subscription(live_server, new_page, transport):
    page = new_page(live_server, transport=transport)
    channel = f"news-{transport}"
    page.evaluate("(channel) => track(channel)", channel)
    connect(page)
    assert page.evaluate("client.transport") == transport
    page.evaluate("(channel) => client.getSubscription(channel).ready()", channel)

    post(live_server, channel, {"title": "persisted"}, persist=True, type="news_update")
    post(live_server, channel, "live only")
    wait_for(page, f"log.received[{channel!r}].length === 2")
    assert page.evaluate("(c) => log.received[c]", channel) == [{"title": "persisted"}, "live only"]
    assert page.evaluate("log.newsUpdates") == [{"title": "persisted"}]  # a custom type, by name, on both transports
    assert page.evaluate("(c) => client.getSubscription(c).position", channel) == 1

    outcome = page.evaluate(
        "(c) => client.publish(c, 'from the page', {persist: true}).then((ack) => ({ack}), (error) => ({error: plain(error)}))",
        channel,
    )
    if transport == "websocket":
        assert outcome["ack"]["offset"] == 2
        wait_for(page, f"log.received[{channel!r}].length === 3")
        assert page.evaluate("(c) => log.received[c][2]", channel) == "from the page"
    else:
        assert outcome["error"]["code"] == "unsupported"
        assert outcome["error"]["name"] == "ConnectionError"


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_js_client_gets_exactly_the_messages_missed_while_the_server_restarted(
    live_server, publisher, new_page, restores, transport
):
    max_delay = 2000
    page = new_page(live_server, transport=transport, maxReconnectDelay=max_delay)
    channel = f"recovery-{transport}"
    page.evaluate("(channel) => track(channel)", channel)
    connect(page)
    for n in (1, 2):
        post(live_server, channel, f"m{n}", persist=True)
    wait_for(page, f"log.received[{channel!r}].length === 2")
    connection_id = page.evaluate("client.connection.connectionId")

    restores(live_server)
    live_server.kill()
    wait_for(page, "client.state === 'connecting'")
    for n in (3, 4, 5):
        post(publisher, channel, f"m{n}", persist=True)
    time.sleep(2.5)  # down long enough for the backoff to reach its ceiling
    live_server.start()
    back_at = time.time() * 1000

    wait_for(page, "client.state === 'connected'", timeout=max_delay + 8000)
    reconnected_at = page.evaluate("log.events.filter(([n]) => n === 'connected').at(-1)[2]")
    assert reconnected_at - back_at <= max_delay + 1500, "rejoined within the maximum delay of a server's return"
    assert page.evaluate("client.connection.connectionId") != connection_id
    wait_for(page, f"log.received[{channel!r}].length >= 5")
    post(live_server, channel, "m6", persist=True)
    wait_for(page, f"log.received[{channel!r}].length >= 6")
    time.sleep(0.3)  # anything delivered twice would have arrived by now
    assert page.evaluate("(c) => log.received[c]", channel) == ["m1", "m2", "m3", "m4", "m5", "m6"]
    subscribed = page.evaluate("(c) => log.subscribed[c]", channel)
    assert subscribed[-1]["resumed"] is True and subscribed[-1]["recovered"] is True
    assert page.evaluate("(c) => log.gaps[c]", channel) == 0
    assert events(page, "disconnected")[0]["reconnecting"] is True


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_js_client_renews_its_token_before_expiry_and_stays_connected(live_server, new_page, transport):
    lifetime = 6
    minted: list[float] = []

    def mint() -> str:
        minted.append(time.time())
        return token_for("alice", lifetime)

    page = new_page(live_server, get_token=mint, transport=transport)
    channel = f"renewal-{transport}"
    page.evaluate("(channel) => track(channel)", channel)
    connect(page)
    post(live_server, channel, "before", persist=True)
    wait_for(page, f"log.received[{channel!r}].length === 1")
    # Past the first token's expiry; waiting through Playwright lets it answer the page's getToken calls.
    page.wait_for_timeout(max(0.0, minted[0] + lifetime + 2 - time.time()) * 1000)

    assert page.evaluate("log.tokens") >= 2
    post(live_server, channel, "after", persist=True)
    wait_for(page, f"log.received[{channel!r}].length === 2")
    assert page.evaluate("(c) => log.received[c]", channel) == ["before", "after"]
    assert events(page, "error") == []
    assert [event for event in events(page, "disconnected") if event.get("code") == 4401] == []
    traces = page.evaluate("log.traces")
    assert not [t for t in traces if t[1] == "stream-error"], "the server never ended the stream for an expired token"
    assert page.evaluate("client.state") == "connected"
    if transport == "websocket":
        assert events(page, "disconnected") == [], "the same connection, renewed with the refresh action"
        assert [t for t in traces if t[:2] == ["out", "refresh"]]
        assert [t for t in traces if t[:2] == ["in", "refreshed"]]
        assert all("[redacted]" in t[2] for t in traces if t[1] == "refresh")
    else:
        reasons = [event["reason"] for event in events(page, "connecting")]
        assert "the token was renewed" in reasons  # the stream was reopened with the new token


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_js_client_sees_a_history_reset_live_and_goes_on_in_the_new_epoch(live_server, new_page, transport):
    page = new_page(live_server, transport=transport)
    channel = f"reset-live-{transport}"
    page.evaluate("(channel) => track(channel)", channel)
    connect(page)
    page.evaluate("(channel) => client.getSubscription(channel).ready()", channel)
    for n in (1, 2):
        post(live_server, channel, f"m{n}", persist=True)
    wait_for(page, f"log.received[{channel!r}].length === 2")

    epoch = reset_history(live_server, channel)

    wait_for(page, f"log.resets[{channel!r}].length === 1")
    assert page.evaluate("(c) => log.resets[c]", channel) == [
        {"channel": channel, "epoch": epoch, "position": 0, "resumed": False}
    ]
    assert position(page, channel) == [0, epoch]
    assert page.evaluate("(c) => log.gaps[c]", channel) == 0
    post(live_server, channel, "after", persist=True)
    wait_for(page, f"log.received[{channel!r}].length === 3")
    assert page.evaluate("(c) => log.received[c]", channel) == ["m1", "m2", "after"]
    assert position(page, channel) == [1, epoch]
    assert page.evaluate("client.state") == "connected"


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_js_client_resuming_across_a_reset_is_not_recovered_and_gets_nothing_under_old_offsets(
    live_server, publisher, new_page, restores, transport
):
    channel = f"reset-away-{transport}"
    post(live_server, channel, "m1", persist=True)  # the channel has an epoch before the subscription
    page = new_page(live_server, transport=transport, maxReconnectDelay=1000)
    page.evaluate("(channel) => track(channel)", channel)
    connect(page)
    wait_for(page, f"log.received[{channel!r}].length === 1")  # the retained history
    post(live_server, channel, "m2", persist=True)
    wait_for(page, f"log.received[{channel!r}].length === 2")
    old_position, old_epoch = position(page, channel)
    assert old_position == 2 and old_epoch

    restores(live_server)
    live_server.kill()
    wait_for(page, "client.state === 'connecting'")
    epoch = reset_history(publisher, channel)
    for n in (1, 2, 3):  # offsets 1-3 of the new epoch: past the page's old offset 2
        post(publisher, channel, f"new {n}", persist=True)
    live_server.start()

    wait_for(page, f"log.subscribed[{channel!r}].length === 2", timeout=20_000)
    traces = page.evaluate("log.traces")
    if transport == "websocket":
        subscribes = [
            json.loads(text)["data"] for direction, label, text in traces if (direction, label) == ("out", "subscribe")
        ]
        assert subscribes[-1] == {"channel": channel, "since": 2, "epoch": old_epoch}
    else:
        url = [text for direction, label, text in traces if (direction, label) == ("out", "GET")][-1]
        assert parse_qs(urlsplit(url).query)["lastEventId"] == [f"{channel}:2-{old_epoch}"]
    assert page.evaluate("(c) => log.resets[c]", channel) == [
        {"channel": channel, "epoch": epoch, "position": 3, "resumed": True}
    ]
    assert page.evaluate("(c) => log.gaps[c]", channel) == 1
    resubscribed = page.evaluate("(c) => log.subscribed[c]", channel)[-1]
    assert (resubscribed["resumed"], resubscribed["recovered"], resubscribed["epoch"]) == (True, False, epoch)
    assert position(page, channel) == [3, epoch]
    time.sleep(0.3)  # anything replayed would have arrived by now
    assert page.evaluate("(c) => log.received[c]", channel) == ["m1", "m2"], "nothing replayed under old offsets"

    post(live_server, channel, "live", persist=True)
    wait_for(page, f"log.received[{channel!r}].length === 3")
    assert page.evaluate("(c) => log.received[c][2]", channel) == "live"
    assert position(page, channel) == [4, epoch]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_js_client_gets_the_server_side_channels_of_its_token_as_subscriptions(live_server, new_page, transport):
    channel, user = f"feed-{transport}", f"ann-{transport}"
    token = authenticator.create_access_token({"sub": user, "subs": [channel]})
    page = new_page(live_server, transport=transport, token=token)
    connect(page)
    assert page.evaluate("client.connection.serverChannels") == [channel]
    page.evaluate("(channel) => follow(channel)", channel)
    assert page.evaluate("(c) => client.getSubscription(c).serverSide", channel) is True
    page.evaluate("(channel) => client.getSubscription(channel).ready()", channel)

    post(live_server, channel, "pushed", persist=True)
    wait_for(page, f"log.received[{channel!r}].length === 1")
    assert page.evaluate("(c) => log.received[c]", channel) == ["pushed"]
    assert position(page, channel)[0] == 1
    if transport == "websocket":
        assert not [t for t in page.evaluate("log.traces") if t[:2] == ["out", "subscribe"]], "joined by the server"
        counts = page.evaluate("(c) => client.presence(c, {countsOnly: true})", channel)
        assert counts == {"channel": channel, "connections": 1, "user_count": 1}
    else:
        url = [t[2] for t in page.evaluate("log.traces") if t[:2] == ["out", "GET"]][-1]
        assert "channels" not in parse_qs(urlsplit(url).query), "the server adds it to the stream"


def test_js_client_falls_back_to_sse_when_the_websocket_is_refused(live_server_factory, new_page):
    server = live_server_factory(WEBSOCKET_ENABLED="false")
    page = new_page(server)  # transport "auto", the default
    page.evaluate("track('fallback')")
    connect(page)
    assert page.evaluate("client.transport") == "sse"
    assert [t for t in page.evaluate("log.traces") if t[1] == "fallback"]
    post(server, "fallback", "over SSE")
    wait_for(page, "log.received.fallback.length === 1")
    assert page.evaluate("log.received.fallback") == ["over SSE"]


def test_js_client_stops_on_a_refused_origin_and_on_a_refused_token(live_server_factory, live_server, new_page):
    elsewhere = live_server_factory(ALLOWED_ORIGINS="https://elsewhere.example")
    page = new_page(elsewhere, transport="websocket")
    error = page.evaluate("client.connect().then(() => null, (error) => plain(error))")
    assert error["code"] == "forbidden" and error["name"] == "FatalError"
    assert page.evaluate("client.state") == "disconnected"

    anonymous = new_page(live_server, transport="websocket", token="not-a-jwt")
    error = anonymous.evaluate("client.connect().then(() => null, (error) => plain(error))")
    assert error["code"] == "unauthenticated" and error["name"] == "FatalError"
    time.sleep(1.5)
    for stopped in (page, anonymous):
        assert len([t for t in stopped.evaluate("log.traces") if t[1] == "open"]) == 1, "not retried"
        assert events(stopped, "disconnected")[-1]["reconnecting"] is False


@pytest.fixture
def examples_site() -> Iterator[str]:
    """examples/ served by a static web server of its own, as the example's instructions say."""
    import functools
    import http.server
    import threading

    from tests.support.server import free_port

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ROOT / "examples"))
    handler.log_message = lambda *args: None
    site = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


def test_html_example_shows_history_and_live_news_and_publishes(live_server_factory, examples_site, browser):
    from playwright.sync_api import expect

    server = live_server_factory(ALLOWED_ORIGINS=examples_site)
    post(server, "news", {"title": "From history"}, persist=True)
    context = browser.new_context(viewport=VIEWPORT)
    errors = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(f"{examples_site}/realtime-client.html?server={server.http}")
        expect(page.locator("#state")).to_have_text("connected", timeout=10_000)
        expect(page.locator("#messages li").first).to_have_text("From history")
        post(server, "news", {"title": "Live headline"})
        expect(page.locator("#messages li").first).to_have_text("Live headline")
        page.get_by_placeholder("A headline").fill("Typed here")
        page.get_by_role("button", name="Publish").click()
        expect(page.locator("#messages li").first).to_have_text("Typed here")
        expect(page.locator("#notice")).to_contain_text("published at offset 2")
    finally:
        context.close()
    assert not errors, errors


# -- snapshot, then the subscription from its position (examples/documents) ----------------------


@pytest.fixture(scope="module")
def documents_server(tmp_path_factory) -> Iterator[LiveServer]:
    """A server running the example application (settings `tests.settings`) on its own database."""
    url = sqlite_url(str(tmp_path_factory.mktemp("documents")))
    env = base_env(url, DJANGO_SETTINGS_MODULE="tests.settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    server = LiveServer(url, CHANNEL_HISTORY_SIZE="1000", DJANGO_SETTINGS_MODULE="tests.settings").start()
    yield server
    server.kill()


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_js_client_subscribe_with_snapshot_shows_each_title_once_in_order_under_concurrent_updates(
    documents_server, new_page, transport
):
    server = documents_server
    response = httpx.post(f"{server.http}/documents/", json={"title": "start", "folder": transport}, timeout=10)
    assert response.status_code == 201, response.text
    pk = response.json()["id"]
    channel = f"doc:{pk}"
    token = token_for("alice")
    page = new_page(server, transport=transport, token=token)
    connect(page)
    writers, updates = 3, 25
    written = []
    lock = threading.Lock()

    def write(index: int) -> None:
        with httpx.Client(timeout=10) as http:
            for n in range(updates):
                reply = http.post(f"{server.http}/documents/{pk}/", json={"title": f"w{index}-{n}"})
                assert reply.status_code == 200, reply.text
                with lock:
                    written.append(n)
                time.sleep(0.02)

    with ThreadPoolExecutor(writers) as pool:
        running = [pool.submit(write, index) for index in range(writers)]
        while len(written) < 10:  # the snapshot is taken while the writers go on
            time.sleep(0.01)
        snapshot = page.evaluate(
            """async (channel) => {
              window.order = [];
              const listeners = { updated: (envelope) => order.push([envelope.offset, envelope.content.data.title]) };
              const snapshot = await client.subscribeWithSnapshot(channel, listeners);
              order.push("snapshot");
              return snapshot;
            }""",
            channel,
        )
        for future in running:
            future.result()
    history = httpx.get(
        f"{server.http}/api/channels/{channel}/history/?since=0&limit=1000", headers=ADMIN_HEADERS
    ).json()
    head, offset = history["offset"], snapshot["offset"]
    assert head == 1 + writers * updates
    assert 10 <= offset < head, "taken while the writers were writing"
    titles = [message["content"]["data"]["title"] for message in history["messages"]]
    wait_for(page, f"order.length === {head - offset + 1}")
    time.sleep(0.3)  # anything delivered twice would have arrived by now
    order = page.evaluate("order")
    assert order[0] == "snapshot", "resolved before any later update was delivered"
    # The snapshot's title, then each later update once, in order: the channel's whole sequence from there.
    assert [snapshot["data"]["title"]] + [title for _, title in order[1:]] == titles[offset - 1 :]
    assert [update_offset for update_offset, _ in order[1:]] == list(range(offset + 1, head + 1))
    assert position(page, channel) == [head, history["epoch"]]
    if transport == "sse":
        url = [t[2] for t in page.evaluate("log.traces") if t[:2] == ["out", "GET"]]
        assert any("/snapshot/" in text for text in url), "the snapshot came over HTTP"
        resumed = parse_qs(urlsplit(url[-1]).query)["lastEventId"][0]
        assert f"doc%3A{pk}:{offset}-{snapshot['epoch']}" in resumed
        assert all(token not in text for text in url), "no credential in the log"
