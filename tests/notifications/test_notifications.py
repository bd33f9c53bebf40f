"""Notifications: stored, delivered after commit on both transports, listed per caller, read per user."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import transaction

from notifications.messages import NotificationMessage
from notifications.models import Notification, NotificationRead
from notifications.services import anotification_create, notification_create
from streaming import connection_manager, protocol
from streaming.auth import authenticator
from streaming.errors import InvalidMessage, StreamingError
from streaming.models import ChannelMessage
from tests.streaming.test_recovery import SSEStream, request

pytestmark = pytest.mark.django_db(transaction=True)

NOTICE = NotificationMessage(title="Обновление системы", content="Система будет недоступна с 22:00 до 23:00")


def token(user_id: str, **claims) -> str:
    return authenticator.create_access_token({"sub": user_id, **claims})


def bearer(user_id: str, **claims) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token(user_id, **claims)}"}


def post(client, path: str, body: dict | None = None, **extra):
    return client.post(path, body or {}, content_type="application/json", **extra)


def assert_notification(envelope: dict, notification: Notification, channel: str) -> None:
    assert envelope["type"] == "notification" and envelope["channel"] == channel
    assert envelope["id"] == notification.message_id and envelope["offset"] is None
    assert envelope["content"] == {
        "title": notification.title,
        "content": notification.content,
        "type": notification.level,
        "auto_hide": notification.auto_hide,
        "duration": notification.duration,
        "notification_id": notification.pk,
    }


@pytest.fixture
async def sse(ws_app):
    """Open SSE streams on the ASGI app: `await sse("channels=a")`; closed afterwards."""
    streams: list[SSEStream] = []

    async def open_stream(query: str = "") -> SSEStream:
        stream = await SSEStream(ws_app, query).open()
        streams.append(stream)
        await stream.until("stream-open")
        return stream

    yield open_stream
    for stream in streams:
        await stream.close()


# ---------------------------------------------------------------------------------------------
# create → stored → delivered


async def test_notification_to_everyone_is_stored_and_reaches_ws_and_sse(connect, sse):
    anonymous, member = await connect(), await connect(f"token={token('u1')}")
    stream = await sse()
    message = NotificationMessage(title="Hello", content="world", type="success", auto_hide=False, duration=10000)
    notification = await anotification_create(message=message)
    row = await Notification.objects.aget(pk=notification.pk)
    assert (row.target, row.level, row.auto_hide, row.duration, row.channel, row.user_id) == (
        "all", "success", False, 10000, "", ""
    )  # fmt: skip
    for communicator in (anonymous, member):
        assert_notification(await communicator.receive_json_from(timeout=3), row, "broadcast")
    event = await stream.next_event()
    assert event["event"] == "notification" and event["id"] is None
    assert_notification(event["data"], row, "broadcast")
    await anonymous.disconnect()
    await member.disconnect()


async def test_notification_to_a_channel_reaches_its_subscribers_only(connect, sse):
    subscriber, bystander = await connect(), await connect()
    await request(subscriber, "subscribe", {"channel": "team"})
    stream, other_stream = await sse("channels=team"), await sse("channels=elsewhere")
    notification = await anotification_create(message=NOTICE, channel="team")
    assert notification.target == "channel" and notification.channel == "team"
    assert_notification(await subscriber.receive_json_from(timeout=3), notification, "team")
    assert_notification((await stream.next_event())["data"], notification, "team")
    assert await bystander.receive_nothing(timeout=0.2)
    assert await other_stream.receive_nothing()
    # a notification is not channel history
    assert not await ChannelMessage.objects.filter(channel_id="team").aexists()
    await subscriber.disconnect()
    await bystander.disconnect()


async def test_notification_to_a_user_reaches_every_connection_of_that_user_only(connect, sse):
    first, second = await connect(f"token={token('u1')}"), await connect(f"token={token('u1')}")
    other = await connect(f"token={token('u2')}")
    stream = await sse(f"token={token('u1')}")
    other_stream = await sse(f"token={token('u2')}")
    notification = await anotification_create(message=NOTICE, user_id="u1")
    assert notification.target == "user" and notification.user_id == "u1"
    for communicator in (first, second):
        assert_notification(await communicator.receive_json_from(timeout=3), notification, "user:u1")
    assert_notification((await stream.next_event())["data"], notification, "user:u1")
    assert await other.receive_nothing(timeout=0.2)
    assert await other_stream.receive_nothing()
    for communicator in (first, second, other):
        await communicator.disconnect()


async def test_notification_is_delivered_only_after_commit(connect):
    communicator = await connect()

    def create_in_a_transaction() -> Notification:
        with transaction.atomic():
            notification = notification_create(message=NOTICE)
            # still inside the transaction: stored for this connection only, so nothing is sent
            assert async_to_sync(communicator.receive_nothing)(timeout=0.3)
        return notification

    notification = await sync_to_async(create_in_a_transaction)()
    assert_notification(await communicator.receive_json_from(timeout=3), notification, "broadcast")
    await communicator.disconnect()


async def test_notification_rolled_back_is_neither_stored_nor_delivered(connect):
    communicator = await connect()

    def create_then_fail() -> None:
        with transaction.atomic():
            notification_create(message=NOTICE)
            raise RuntimeError("the caller's transaction fails")

    with pytest.raises(RuntimeError):
        await sync_to_async(create_then_fail)()
    assert not await Notification.objects.aexists()
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channel": "bad channel"},
        {"user_id": "no spaces allowed"},
    ],
)
async def test_notification_create_rejects_bad_addresses(kwargs):
    with pytest.raises(StreamingError):
        await anotification_create(message=NOTICE, **kwargs)
    assert not await Notification.objects.aexists()


async def test_notification_create_refuses_both_a_channel_and_a_user():
    with pytest.raises(ValueError):
        await anotification_create(message=NOTICE, channel="team", user_id="u1")
    assert not await Notification.objects.aexists()


@pytest.mark.parametrize(
    ("fields", "invalid"),
    [
        ({"title": "t", "type": "critical"}, "type"),
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "t", "duration": -1}, "duration"),
        ({"title": "t", "duration": True}, "duration"),
    ],
)
def test_notification_message_validates_its_fields(fields, invalid):
    with pytest.raises(InvalidMessage) as error:
        NotificationMessage(**fields)
    assert invalid in error.value.fields


# ---------------------------------------------------------------------------------------------
# the server-side Python API


async def test_connection_manager_sends_notifications_and_persisted_channel_messages(connect):
    user, watcher = await connect(f"token={token('u1')}"), await connect()
    await request(watcher, "subscribe", {"channel": "important_updates"})

    notification = await connection_manager.send_to_user(
        "u1", NotificationMessage(title="Личное", type="warning", auto_hide=False, duration=10000)
    )
    assert isinstance(notification, Notification) and notification.target == "user"
    assert_notification(await user.receive_json_from(timeout=3), notification, "user:u1")
    assert await watcher.receive_nothing(timeout=0.2)

    notification = await connection_manager.broadcast_to_channel(
        "important_updates", NotificationMessage(title="Канал"), persist=True
    )
    assert notification.target == "channel" and notification.channel == "important_updates"
    assert_notification(await watcher.receive_json_from(timeout=3), notification, "important_updates")

    published = await connection_manager.broadcast_to_channel(
        "important_updates", {"type": "update", "content": {"v": 2}}, persist=True
    )
    envelope = await watcher.receive_json_from(timeout=3)
    assert envelope["type"] == "update" and envelope["content"] == {"v": 2}
    assert envelope["offset"] == published.offset == 1 and envelope["id"] == published.id
    row = await ChannelMessage.objects.aget(channel_id="important_updates", offset=1)
    assert row.message_id == published.id

    everyone = await connection_manager.broadcast_to_all(NotificationMessage(title="Всем"))
    for communicator in (user, watcher):
        assert_notification(await communicator.receive_json_from(timeout=3), everyone, "broadcast")
    assert await Notification.objects.acount() == 3
    await user.disconnect()
    await watcher.disconnect()


# ---------------------------------------------------------------------------------------------
# POST /sse/notification


@pytest.mark.parametrize("level", ["info", "success", "warning", "error"])
async def test_send_notification_api_stores_and_delivers_each_level(connect, client, level):
    communicator = await connect()
    body = {"title": "Deploy", "content": "done", "type": level, "auto_hide": False, "duration": 7000}
    response = await sync_to_async(post)(client, "/sse/notification", body)
    assert response.status_code == 202, response.content
    reply = response.json()
    row = await Notification.objects.aget(pk=reply["notification_id"])
    assert reply["id"] == row.message_id
    assert (row.title, row.content, row.level, row.auto_hide, row.duration, row.target) == (
        "Deploy", "done", level, False, 7000, "all"
    )  # fmt: skip
    assert_notification(await communicator.receive_json_from(timeout=3), row, "broadcast")
    await communicator.disconnect()


async def test_send_notification_api_defaults_and_targets(connect, client):
    user, other = await connect(f"token={token('u7')}"), await connect()
    response = await sync_to_async(post)(client, "/sse/notification", {"title": "Hi", "content": "", "user_id": "u7"})
    assert response.status_code == 202
    row = await Notification.objects.aget(pk=response.json()["notification_id"])
    assert (row.level, row.auto_hide, row.duration, row.target, row.user_id) == ("info", True, 5000, "user", "u7")
    assert_notification(await user.receive_json_from(timeout=3), row, "user:u7")
    assert await other.receive_nothing(timeout=0.2)
    await user.disconnect()
    await other.disconnect()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "t", "content": "c", "type": "critical"}, "type"),
        ({"title": "t", "content": "c", "type": "INFO"}, "type"),
        ({"content": "c"}, "title"),
        ({"title": "t", "content": "c", "duration": -5}, "duration"),
        ({"title": "t", "content": "c", "channel": "bad channel"}, "channel"),
        ({"title": "t", "content": "c", "channel": "a", "user_id": "u"}, "non_field_errors"),
    ],
)
def test_send_notification_api_rejects_invalid_bodies(client, body, field):
    response = post(client, "/sse/notification", body)
    assert response.status_code == 400
    expected = "invalid_channel" if body.get("channel") == "bad channel" else "invalid_message"
    assert response.json()["type"] == expected and field in response.json()["fields"]
    assert not Notification.objects.exists()


def test_send_notification_api_needs_an_admin_when_auth_is_required(client, realtime):
    realtime(api_auth_required=True)
    body = {"title": "t", "content": "c"}
    assert post(client, "/sse/notification", body).status_code == 401
    assert post(client, "/sse/notification", body, **bearer("u1")).status_code == 403
    assert post(client, "/sse/notification", body, **bearer("boss", role="admin")).status_code == 202
    assert Notification.objects.count() == 1


# ---------------------------------------------------------------------------------------------
# GET /api/notifications/ and read state


@pytest.fixture
def addressed(db) -> dict[str, Notification]:
    """One notification per kind of address."""
    return {
        "everyone": notification_create(message=NotificationMessage(title="everyone")),
        "team": notification_create(message=NotificationMessage(title="team"), channel="team"),
        "private": notification_create(message=NotificationMessage(title="private"), channel="private-ops"),
        "u1": notification_create(message=NotificationMessage(title="u1"), user_id="u1"),
        "u2": notification_create(message=NotificationMessage(title="u2"), user_id="u2"),
    }


def titles(response) -> list[str]:
    assert response.status_code == 200, response.content
    return sorted(item["title"] for item in response.json()["results"])


def test_notification_list_shows_what_is_addressed_to_the_caller(client, addressed):
    assert titles(client.get("/api/notifications/", **bearer("u1"))) == ["everyone", "u1"]
    assert titles(client.get("/api/notifications/", **bearer("u2"))) == ["everyone", "u2"]
    assert titles(client.get("/api/notifications/?channels=team", **bearer("u1"))) == ["everyone", "team", "u1"]
    # a private channel only with the right to it
    assert titles(client.get("/api/notifications/?channels=private-ops", **bearer("u1"))) == ["everyone", "u1"]
    granted = bearer("u1", channels=["private-*"])
    assert titles(client.get("/api/notifications/?channels=private-ops,team", **granted)) == [
        "everyone", "private", "team", "u1"
    ]  # fmt: skip


def test_notification_list_items_have_the_notification_shape(client, addressed):
    (item,) = [i for i in client.get("/api/notifications/", **bearer("u1")).json()["results"] if i["title"] == "u1"]
    assert set(item) == {
        "id", "title", "content", "type", "auto_hide", "duration", "target", "channel", "user_id", "created_at", "read",
    }  # fmt: skip
    assert item["id"] == addressed["u1"].pk and item["type"] == "info" and item["read"] is False


def test_notification_list_refuses_anonymous_and_identities_without_a_user(client, addressed, realtime):
    realtime(ws_api_keys=("key-1",))
    response = client.get("/api/notifications/")
    assert response.status_code == 401 and response.json()["type"] == "unauthenticated"
    assert client.get("/api/notifications/", HTTP_X_API_KEY="key-1").status_code == 403
    assert client.get("/api/notifications/?channels=bad%20name", **bearer("u1")).status_code == 400


def test_notification_list_for_a_session_user(client, django_user_model, addressed):
    user = django_user_model.objects.create_user("alice", password="pw-123-long-enough")
    mine = notification_create(message=NotificationMessage(title="for alice"), user_id=str(user.pk))
    client.force_login(user)
    assert titles(client.get("/api/notifications/")) == ["everyone", "for alice"]
    assert post(client, f"/api/notifications/{mine.pk}/read/").status_code == 200
    assert NotificationRead.objects.filter(notification=mine, user_id=str(user.pk)).exists()


async def test_notification_list_includes_the_callers_live_subscriptions(connect, client, addressed):
    from streaming.runtime import get_runtime

    headers = bearer("u1")
    assert titles(await sync_to_async(client.get)("/api/notifications/", **headers)) == ["everyone", "u1"]
    communicator = await connect(f"token={token('u1')}")
    await request(communicator, "subscribe", {"channel": "team"})
    await get_runtime().registry.flush()
    assert titles(await sync_to_async(client.get)("/api/notifications/", **headers)) == ["everyone", "team", "u1"]
    # another user's subscriptions do not count for u2
    assert titles(await sync_to_async(client.get)("/api/notifications/", **bearer("u2"))) == ["everyone", "u2"]
    await communicator.disconnect()
    await get_runtime().registry.flush()
    assert titles(await sync_to_async(client.get)("/api/notifications/", **headers)) == ["everyone", "u1"]


def test_mark_read_is_per_user_and_filters_unread(client, addressed):
    u1, u2 = bearer("u1"), bearer("u2")
    everyone = addressed["everyone"]
    response = post(client, f"/api/notifications/{everyone.pk}/read/", **u1)
    assert response.status_code == 200 and response.json() == {"id": everyone.pk, "read": True}
    assert post(client, f"/api/notifications/{everyone.pk}/read/", **u1).status_code == 200  # idempotent
    assert NotificationRead.objects.filter(notification=everyone).count() == 1
    listed = {i["title"]: i["read"] for i in client.get("/api/notifications/", **u1).json()["results"]}
    assert listed == {"everyone": True, "u1": False}
    assert titles(client.get("/api/notifications/?unread=true", **u1)) == ["u1"]
    assert titles(client.get("/api/notifications/?unread=true", **u2)) == ["everyone", "u2"]


def test_mark_read_of_a_notification_the_caller_cannot_see_is_404(client, addressed):
    for pk in (addressed["u2"].pk, addressed["team"].pk, 999_999):
        response = post(client, f"/api/notifications/{pk}/read/", **bearer("u1"))
        assert response.status_code == 404 and response.json()["type"] == "not_found"
    assert not NotificationRead.objects.exists()
    assert (
        post(client, f"/api/notifications/{addressed['team'].pk}/read/?channels=team", **bearer("u1")).status_code
        == 200
    )


def test_read_all_marks_everything_visible_for_that_user_only(client, addressed):
    u1 = bearer("u1")
    post(client, f"/api/notifications/{addressed['u1'].pk}/read/", **u1)
    response = post(client, "/api/notifications/read-all/?channels=team", **u1)
    assert response.status_code == 200 and response.json() == {"marked": 2}  # everyone and team
    assert titles(client.get("/api/notifications/?unread=true&channels=team", **u1)) == []
    assert post(client, "/api/notifications/read-all/?channels=team", **u1).json() == {"marked": 0}
    assert titles(client.get("/api/notifications/?unread=true", **bearer("u2"))) == ["everyone", "u2"]
    assert set(NotificationRead.objects.values_list("user_id", flat=True)) == {"u1"}
    assert not NotificationRead.objects.filter(notification=addressed["private"]).exists()


def test_notifications_are_newest_first_and_paginated(client, db):
    for n in range(3):
        notification_create(message=NotificationMessage(title=f"n{n}"))
    body = client.get("/api/notifications/?page_size=2", **bearer("u1")).json()
    assert body["count"] == 3 and [i["title"] for i in body["results"]] == ["n2", "n1"]
    assert body["next"] is not None


def test_notification_content_of_a_non_string_payload_is_stored_as_json(db):
    notification = notification_create(message=NotificationMessage(title="t", content={"a": 1}))
    assert protocol.decode(Notification.objects.get(pk=notification.pk).content) == {"a": 1}
