"""The notifications admin: a notification composed there is stored once and delivered live."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from notifications.messages import NotificationMessage
from notifications.models import Notification, NotificationRead
from notifications.services import notification_create
from streaming.auth import authenticator
from tests.streaming.test_recovery import request

pytestmark = pytest.mark.django_db(transaction=True)

ADD = "/admin/notifications/notification/add/"


def compose(admin_client, **fields):
    form = {
        "title": "Обновление системы",
        "content": "Система будет недоступна с 22:00 до 23:00",
        "level": "warning",
        "duration": "10000",
        "target": "all",
        "channel": "",
        "user_id": "",
        **fields,
    }
    return admin_client.post(ADD, form)


async def test_composed_notification_is_delivered_live_to_a_channel(connect, admin_client, admin_user):
    subscriber, bystander = await connect(), await connect()
    await request(subscriber, "subscribe", {"channel": "ops"})
    response = await sync_to_async(compose)(admin_client, target="channel", channel="ops", auto_hide="on")
    assert response.status_code == 302, response.content.decode()[-2000:]
    notification = await Notification.objects.aget()
    assert (notification.target, notification.channel, notification.level, notification.auto_hide) == (
        "channel", "ops", "warning", True
    )  # fmt: skip
    assert notification.created_by_id == admin_user.pk and notification.created_by_label == admin_user.username
    envelope = await subscriber.receive_json_from(timeout=3)
    assert envelope["type"] == "notification" and envelope["channel"] == "ops"
    assert envelope["id"] == notification.message_id
    assert envelope["content"] == {
        "title": "Обновление системы",
        "content": "Система будет недоступна с 22:00 до 23:00",
        "type": "warning",
        "auto_hide": True,
        "duration": 10000,
        "notification_id": notification.pk,
    }
    assert await bystander.receive_nothing(timeout=0.2)
    assert await subscriber.receive_nothing(timeout=0.2)  # delivered once
    await subscriber.disconnect()
    await bystander.disconnect()


async def test_composed_notification_to_everyone_and_to_a_user(connect, admin_client):
    user = await connect("token=" + authenticator.create_access_token({"sub": "u1"}))
    other = await connect()
    response = await sync_to_async(compose)(admin_client, target="user", user_id="u1", level="error")
    assert response.status_code == 302
    personal = await user.receive_json_from(timeout=3)
    assert personal["channel"] == "user:u1" and personal["content"]["type"] == "error"
    assert personal["content"]["auto_hide"] is False  # the checkbox was left unticked
    assert await other.receive_nothing(timeout=0.2)
    response = await sync_to_async(compose)(admin_client, title="Всем", level="info")
    assert response.status_code == 302
    for communicator in (user, other):
        envelope = await communicator.receive_json_from(timeout=3)
        assert envelope["channel"] == "broadcast" and envelope["content"]["title"] == "Всем"
    assert await Notification.objects.acount() == 2
    await user.disconnect()
    await other.disconnect()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"target": "channel", "channel": ""}, "channel"),
        ({"target": "channel", "channel": "bad channel"}, "channel"),
        ({"target": "user", "user_id": ""}, "user_id"),
        ({"target": "user", "user_id": "no spaces"}, "user_id"),
        ({"level": "critical"}, "level"),
        ({"title": ""}, "title"),
    ],
)
async def test_composing_an_invalid_notification_shows_the_form_again(connect, admin_client, fields, field):
    communicator = await connect()
    response = await sync_to_async(compose)(admin_client, **fields)
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not await Notification.objects.aexists()
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


async def test_a_sent_notification_cannot_be_rewritten_or_resent(connect, admin_client):
    notification = await sync_to_async(notification_create)(message=NotificationMessage(title="sent"))
    communicator = await connect()
    url = f"/admin/notifications/notification/{notification.pk}/change/"
    page = await sync_to_async(admin_client.get)(url)
    assert page.status_code == 200 and b'name="title"' not in page.content  # shown read-only
    response = await sync_to_async(admin_client.post)(url, {"title": "rewritten", "target": "all"})
    assert response.status_code == 302
    assert (await Notification.objects.aget(pk=notification.pk)).title == "sent"
    assert await Notification.objects.acount() == 1
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


def test_notification_changelist_shows_read_counts_in_bounded_queries(admin_client, django_assert_max_num_queries):
    notifications = [notification_create(message=NotificationMessage(title=f"n{n}")) for n in range(120)]
    NotificationRead.objects.bulk_create(
        NotificationRead(notification=notification, user_id=f"u{k}")
        for notification in notifications
        for k in range(notifications.index(notification) % 4)
    )
    with django_assert_max_num_queries(8):
        response = admin_client.get("/admin/notifications/notification/?o=-8")
    assert response.status_code == 200
    results = response.context["cl"].result_list
    assert len(results) == 100
    assert {n.read_total for n in results} == {0, 1, 2, 3}
    with django_assert_max_num_queries(8):
        assert admin_client.get("/admin/notifications/notificationread/").status_code == 200
