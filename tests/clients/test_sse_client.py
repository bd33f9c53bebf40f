"""The SSE client against a real daphne process: the stream, its events, publishing, refusals."""

from __future__ import annotations

import uuid

import httpx
import pytest
from realtime_client import (
    AccessDenied,
    AuthenticationFailed,
    ClientState,
    Refused,
    ReplyError,
    SSEClient,
    create_sse_client,
)

from tests.support.clients import without_epochs
from tests.support.polling import eventually, publish, refusals, token_for
from tests.support.server import ADMIN_HEADERS

pytestmark = pytest.mark.server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def keyed_server(live_server_factory):
    """A server that requires credentials and accepts one API key (long enough that no random id in a log contains it)."""
    return live_server_factory(
        WS_API_KEYS="client-api-key-1-5f0c2a9e7b", WEBSOCKET_AUTH_REQUIRED="true", SSE_AUTH_REQUIRED="true"
    )


async def test_connect_greets_with_the_stream_channels(live_server, make_client):
    channel = unique("news")
    client = make_client(SSEClient, live_server)
    greetings, opened = [], []
    client.on_event("connected")(greetings.append)
    client.on_connect(opened.append)

    await client.connect(channels=[channel])

    assert client.state is ClientState.CONNECTED
    assert client.connection.channels == [channel, "broadcast"]
    assert client.connection.heartbeat_interval == 30
    assert client.retry == 3.0
    await eventually(lambda: greetings and opened, what="greeting and on_connect")
    assert greetings[0]["event"] == "connected"
    assert greetings[0]["data"]["data"]["connection_id"] == client.connection.connection_id
    assert greetings[0]["id"] is None


async def test_channel_events_carry_the_envelope_and_a_resumable_id(live_server, make_client):
    channel = unique("news")
    client = make_client(SSEClient, live_server, channels=[channel])
    updates = []

    @client.on_event("news_update")
    async def handle(event_data):
        updates.append(event_data)

    await client.connect()
    reply = await client.send_to_channel(channel, "news_update", {"title": "Новая статья"}, persist=True)

    await eventually(lambda: updates, what="the news_update event")
    event = updates[0]
    assert event["event"] == "news_update"
    assert event["data"]["id"] == reply["id"]
    assert event["data"]["content"] == {"title": "Новая статья"}
    assert event["data"]["offset"] == reply["offset"] == 1
    assert without_epochs(event["id"]) == f"{channel}:1"
    assert without_epochs(client.last_event_id) == f"{channel}:1"


async def test_notifications_and_broadcasts_reach_the_stream(live_server, make_client):
    client = make_client(SSEClient, live_server)
    notifications, everything = [], []
    client.on_event("notification")(notifications.append)
    client.on_event("*")(lambda event_data: everything.append(event_data["event"]))
    await client.connect()

    sent = await client.send_notification(title="Тест", content="Тестовое уведомление", type="warning", duration=100)
    broadcast = await client.broadcast("to everyone", type="announcement")

    await eventually(lambda: "announcement" in everything, what="the broadcast")
    content = notifications[0]["data"]["content"]
    assert notifications[0]["data"]["id"] == sent["id"]
    assert (content["title"], content["content"], content["type"], content["duration"]) == (
        "Тест", "Тестовое уведомление", "warning", 100,
    )  # fmt: skip
    assert everything.index("notification") < everything.index("announcement")
    assert "id" in broadcast


async def test_send_to_user_reaches_that_users_stream(live_server, make_client):
    user = unique("frank")
    listener = make_client(SSEClient, live_server, token=token_for(user))
    sender = make_client(SSEClient, live_server)
    direct = []
    listener.on_event("dm")(direct.append)
    await listener.connect()

    reply = await sender.send_to_user(user, "just for you", type="dm")

    await eventually(lambda: direct, what="the personal message")
    assert direct[0]["data"]["id"] == reply["id"]
    assert direct[0]["data"]["channel"] == f"user:{user}"


async def test_retained_history_is_replayed_when_the_stream_opens(live_server, make_client):
    channel = unique("archive")
    ids = [publish(live_server, channel, n, persist=True)["id"] for n in range(3)]
    client = make_client(SSEClient, live_server, channels=[channel])
    messages = client.messages()

    await client.connect()

    replayed = [await anext(messages) for _ in range(3)]
    assert [envelope["id"] for envelope in replayed] == ids
    assert without_epochs(client.last_event_id) == f"{channel}:3"


async def test_an_administrator_closing_the_stream_reaches_error_handlers_and_the_client_resumes(
    live_server, make_client
):
    channel = unique("resumable")
    client = make_client(SSEClient, live_server, channels=[channel])
    errors, reconnects, contents = [], [], []

    @client.on_event("error")
    async def handle_error(event_data):  # the design document's SSE error handler
        error = event_data.get("data", {})
        errors.append(error)

    client.on_reconnect(reconnects.append)
    client.on_event("message")(lambda event_data: contents.append(event_data["data"]["content"]))
    await client.connect()
    publish(live_server, channel, "before", persist=True)
    await eventually(lambda: contents == ["before"], what="the first message")
    first_connection = client.connection.connection_id

    closed = httpx.delete(f"{live_server.http}/ws/connections/{first_connection}", headers=ADMIN_HEADERS)

    assert closed.status_code == 204
    await eventually(lambda: reconnects, what="the reconnection")
    assert errors == [{"condition": "closed", "text": "closed by an administrator"}]
    assert reconnects[0].recovered == {channel: True}
    assert client.recovery == {channel: True}
    assert client.connection.connection_id != first_connection
    publish(live_server, channel, "after", persist=True)
    await eventually(lambda: contents == ["before", "after"], what="delivery on the new stream")


async def test_the_stream_refuses_bad_channels_forbidden_channels_and_bad_tokens(live_server, make_client):
    with pytest.raises(Refused) as bad_channel:
        await make_client(SSEClient, live_server, channels=["no spaces"]).connect()
    with pytest.raises(AccessDenied) as forbidden:
        await make_client(SSEClient, live_server, channels=["private-payroll"]).connect()
    with pytest.raises(AuthenticationFailed) as bad_token:
        await make_client(SSEClient, live_server, token="not-a-jwt").connect()

    assert (bad_channel.value.code, forbidden.value.code, bad_token.value.code) == (400, 403, 401)
    assert "invalid_channel" in bad_channel.value.reason
    assert "private-payroll" in forbidden.value.reason


async def test_missing_credentials_fail_at_once_without_retrying(keyed_server, make_client):
    client = make_client(SSEClient, keyed_server, max_reconnect_attempts=5)
    before = refusals(keyed_server, "sse")

    with pytest.raises(AuthenticationFailed):
        await client.connect()

    assert client.state is ClientState.DISCONNECTED
    assert refusals(keyed_server, "sse") == before + 1


async def test_api_key_and_token_open_streams_where_auth_is_required(keyed_server, make_client):
    by_key = make_client(SSEClient, keyed_server, api_key="client-api-key-1-5f0c2a9e7b")
    by_token = make_client(SSEClient, keyed_server, token=token_for("erin"))
    await by_key.connect()
    await by_token.connect()
    assert by_token.connection.channels == ["broadcast", "user:erin"]


async def test_publishing_helpers_raise_reply_errors_with_code_and_status(keyed_server, make_client):
    anonymous = make_client(SSEClient, keyed_server)
    admin = make_client(SSEClient, keyed_server, api_key="client-api-key-1-5f0c2a9e7b")

    with pytest.raises(ReplyError) as unauthenticated:
        await anonymous.send_notification(title="t", content="c")
    with pytest.raises(ReplyError) as invalid:
        await admin.send_notification(title="t", content="c", type="catastrophe")

    assert (unauthenticated.value.status, unauthenticated.value.code) == (401, "unauthenticated")
    assert invalid.value.status == 400 and "type" in (invalid.value.fields or {})
    assert "notification_id" in await admin.send_notification(title="t", content="c")


def test_create_sse_client_takes_the_design_documents_arguments():
    client = create_sse_client(
        host="localhost", port=8000, api_key="k", auto_reconnect=True, max_reconnect_attempts=10, reconnect_interval=5
    )
    assert client.url == "http://localhost:8000/sse/connect"
    assert client.endpoint.headers() == {"X-API-Key": "k"}
    assert (client.auto_reconnect, client.max_reconnect_attempts, client.backoff.initial) == (True, 10, 5)
    assert create_sse_client(channels=["a"]).channels == ["a"]
