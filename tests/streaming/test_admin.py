"""The realtime admin: disconnecting live connections, and changelists that stay cheap on big tables."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from streaming.models import Channel, ChannelMessage, Connection, ServerProcess, Subscription
from tests.streaming.test_recovery import request

pytestmark = pytest.mark.django_db(transaction=True)

HISTORY_ROWS = 100_000
CHANGELIST_QUERIES = 10  # session, user, counts, one page, one prefetch, filter choices: not one per row


def disconnect(admin_client, *connection_ids: str):
    return admin_client.post(
        "/admin/streaming/connection/",
        {"action": "disconnect_selected", "_selected_action": list(connection_ids)},
        follow=True,
    )


async def test_disconnect_selected_closes_a_live_connection_with_4409(connect, admin_client):
    from streaming.runtime import get_runtime

    target, bystander = await connect(), await connect()
    await request(target, "subscribe", {"channel": "watched"})
    await get_runtime().registry.flush()
    connection_id = target.greeting["data"]["connection_id"]
    response = await sync_to_async(disconnect)(admin_client, connection_id)
    assert response.status_code == 200
    assert "Disconnected 1 connection(s)." in response.content.decode()
    closed = await target.receive_output(timeout=3)
    assert closed["type"] == "websocket.close" and closed["code"] == 4409
    assert await bystander.receive_nothing(timeout=0.2)
    await target.disconnect()  # the client's side of the closing handshake
    await get_runtime().registry.flush()
    row = await Connection.objects.aget(id=connection_id)
    assert row.closed_at is not None and row.close_code == 4409
    await bystander.disconnect()


async def test_disconnect_selected_reports_connections_it_cannot_reach(connect, admin_client):
    from streaming.runtime import get_runtime

    communicator = await connect()
    await get_runtime().registry.flush()
    gone = await ServerProcess.objects.acreate(
        id="gone:1", bus_channel="hub.gone", hostname="gone", pid=1,
        started_at=timezone.now(), last_heartbeat=timezone.now() - timedelta(hours=1),
    )  # fmt: skip
    await Connection.objects.acreate(
        id="ghost", transport="ws", process=gone, connected_at=timezone.now(), last_seen=timezone.now()
    )
    await Connection.objects.acreate(
        id="closed", transport="ws", process=gone, connected_at=timezone.now(), last_seen=timezone.now(),
        closed_at=timezone.now(), close_code=1000,
    )  # fmt: skip
    live_id = communicator.greeting["data"]["connection_id"]
    response = await sync_to_async(disconnect)(admin_client, "ghost", "closed", live_id)
    page = response.content.decode()
    assert '<li class="warning">Ghost: No open connection &#x27;ghost&#x27;.</li>' in page
    assert "closed" not in page.split('class="messagelist"')[1].split("</ul>")[0]  # a closed row is skipped
    assert "Disconnected 1 connection(s)." in page
    closed = await communicator.receive_output(timeout=3)
    assert closed["code"] == 4409


def test_disconnect_needs_an_admin(client, django_user_model):
    user = django_user_model.objects.create_user("plain", password="pw-123-long-enough")
    client.force_login(user)
    response = client.post("/admin/streaming/connection/", {"action": "disconnect_selected", "_selected_action": ["x"]})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def _history_and_connections() -> None:
    now = timezone.now()
    channels = [Channel(name=f"ch-{n}", last_offset=HISTORY_ROWS // 50) for n in range(50)]
    Channel.objects.bulk_create(channels)
    ChannelMessage.objects.bulk_create(
        (
            ChannelMessage(
                channel_id=f"ch-{n % 50}",
                offset=n // 50 + 1,
                message_id=f"m{n}",
                type="message",
                text=f'{{"id": "m{n}", "content": {{"n": {n}}}}}',
                created_at=now,
            )
            for n in range(HISTORY_ROWS)
        ),
        batch_size=5000,
    )
    process = ServerProcess.objects.create(
        id="p:1", bus_channel="hub.p1", hostname="h", pid=1, started_at=now, last_heartbeat=now
    )
    Connection.objects.bulk_create(
        Connection(
            id=f"c{n}",
            transport="ws" if n % 2 else "sse",
            user_id=f"u{n}",
            process=process,
            connected_at=now,
            last_seen=now,
        )
        for n in range(300)
    )
    Subscription.objects.bulk_create(
        Subscription(connection_id=f"c{n}", channel=f"ch-{k}") for n in range(300) for k in range(3)
    )


def test_changelists_run_a_bounded_number_of_queries_on_big_tables(admin_client, django_assert_max_num_queries):
    _history_and_connections()
    assert ChannelMessage.objects.count() == HISTORY_ROWS
    pages = [
        "/admin/streaming/channelmessage/",
        "/admin/streaming/channelmessage/?p=3",
        "/admin/streaming/channelmessage/?q=ch-7",
        "/admin/streaming/connection/",
        "/admin/streaming/connection/?state=open&transport=ws",
        "/admin/streaming/serverprocess/",
    ]
    for page in pages:
        with django_assert_max_num_queries(CHANGELIST_QUERIES):
            response = admin_client.get(page)
        assert response.status_code == 200, page
    body = admin_client.get("/admin/streaming/connection/").content.decode()
    assert "ch-0, ch-1, ch-2" in body  # the channels column, from one prefetch
    body = admin_client.get("/admin/streaming/channelmessage/?q=ch-7").content.decode()
    assert "ch-7" in body and "ch-8" not in body


def test_channel_history_is_read_only(admin_client):
    Channel.objects.create(name="ro", last_offset=1)
    message = ChannelMessage.objects.create(
        channel_id="ro",
        offset=1,
        message_id="m1",
        type="message",
        text='{"id": "m1", "type": "message", "content": "x <b>"}',
        created_at=timezone.now(),
    )
    assert admin_client.get("/admin/streaming/channelmessage/add/").status_code == 403
    page = admin_client.get(f"/admin/streaming/channelmessage/{message.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert b"&quot;content&quot;: &quot;x &lt;b&gt;&quot;" in page.content  # the stored envelope, escaped
    response = admin_client.post(f"/admin/streaming/channelmessage/{message.pk}/change/", {"type": "changed"})
    assert response.status_code == 403
    assert ChannelMessage.objects.get(pk=message.pk).type == "message"
    assert admin_client.get("/admin/streaming/connection/add/").status_code == 403


def test_admin_index_names_server_processes_in_plural(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "Server processes" in page and "Server processs" not in page
