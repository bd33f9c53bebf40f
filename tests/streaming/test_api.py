"""The HTTP API of the README's "HTTP API" with the Django test client: bodies, statuses, delivery."""

from __future__ import annotations

import pytest

from streaming import protocol
from streaming.models import ChannelMessage, Connection, ServerProcess

pytestmark = pytest.mark.django_db


def post(client, path, body, **extra):
    return client.post(path, body, content_type="application/json", **extra)


def test_seed_send_to_channel_curl_example_works_verbatim(
    client, realtime_published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(
            client,
            "/ws/send-to-channel",
            {
                "channel": "notifications",
                "message": {
                    "id": "msg-124",
                    "type": "notification",
                    "content": {"title": "Новое уведомление", "message": "Содержимое уведомления"},
                },
                "persist": True,
            },
        )
    assert response.status_code == 202
    assert response.json() == {"id": "msg-124", "offset": 1}
    row = ChannelMessage.objects.get()
    assert (row.channel_id, row.offset, row.message_id, row.type) == ("notifications", 1, "msg-124", "notification")
    realtime_published.assert_published(
        channel="notifications", type="notification", id="msg-124", offset=1, persist=True, times=1,
        content={"title": "Новое уведомление", "message": "Содержимое уведомления"},
    )  # fmt: skip


def test_seed_broadcast_curl_example_works_verbatim(client, realtime_published):
    response = post(
        client,
        "/ws/broadcast",
        {"message": {"id": "msg-123", "type": "broadcast", "content": "Сообщение всем пользователям"}},
    )
    assert response.status_code == 202 and response.json() == {"id": "msg-123"}
    realtime_published.assert_published(
        channel="broadcast", type="broadcast", id="msg-123", content="Сообщение всем пользователям",
        offset=None, sender=None, times=1,
    )  # fmt: skip


def test_send_to_user_goes_to_personal_channel(client, realtime_published):
    response = post(client, "/ws/send-to-user", {"user_id": "user123", "message": {"content": "hi"}})
    assert response.status_code == 202
    realtime_published.assert_published(channel="user:user123", type="message", content="hi", times=1)


def test_seed_sse_send_to_channel_curl_example(client, realtime_published):
    response = post(
        client,
        "/sse/send-to-channel",
        {"channel": "news", "event": "news_update", "data": {"title": "Новая статья", "content": "Содержимое новости"}},
    )
    assert response.status_code == 202
    realtime_published.assert_published(
        channel="news", type="news_update", content={"title": "Новая статья", "content": "Содержимое новости"}, times=1
    )


def test_publish_is_encoded_once(client, bus, monkeypatch):
    calls = []
    real_encode = protocol.encode
    monkeypatch.setattr(protocol, "encode", lambda payload: calls.append(1) or real_encode(payload))
    post(client, "/ws/send-to-channel", {"channel": "once", "message": {"content": {"x": 1}}})
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/ws/send-to-channel", {"channel": "bad name", "message": {"content": 1}}, "channel"),
        ("/ws/send-to-channel", {"channel": "ok", "message": {}}, "message"),
        ("/ws/send-to-channel", {"channel": "ok"}, "message"),
        ("/ws/send-to-channel", {"channel": "ok", "message": {"content": 1, "type": "no spaces"}}, "message"),
        ("/ws/send-to-channel", {"channel": "ok", "message": {"content": 1, "type": "notification\n"}}, "message"),
        ("/sse/send-to-channel", {"channel": "ok", "event": "error\n", "data": 1}, "event"),
        ("/ws/send-to-channel", {"channel": "ok\n", "message": {"content": 1}}, "channel"),
        ("/ws/send-to-user", {"user_id": "alice\n", "message": {"content": 1}}, "user_id"),
        ("/ws/send-to-channel", {"channel": "ok", "message": {"content": 1}, "persist": "maybe"}, "persist"),
        ("/ws/send-to-user", {"user_id": "a b", "message": {"content": 1}}, "user_id"),
        ("/ws/broadcast", {"message": "not an object"}, "message"),
        ("/sse/send-to-channel", {"channel": "ok"}, "data"),
        ("/sse/notification", {"title": "t", "content": "c", "type": "critical"}, "type"),
        ("/sse/notification", {"content": "c"}, "title"),
    ],
)
def test_invalid_bodies_get_400_with_field_errors(client, path, body, field):
    response = post(client, path, body)
    assert response.status_code == 400
    data = response.json()
    assert data["type"] == ("invalid_channel" if body.get("channel") in ("bad name", "ok\n") else "invalid_message")
    assert field in data["fields"], data


def test_malformed_json_gets_400_invalid_json(client):
    response = client.post("/ws/send-to-channel", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["type"] == "invalid_json"


def test_body_over_max_message_size_gets_413(client, realtime):
    realtime(sse_max_message_size=1000)
    response = post(client, "/ws/send-to-channel", {"channel": "big", "message": {"content": "x" * 2000}})
    assert response.status_code == 413
    assert response.json()["type"] == "message_too_large"


def test_too_large_persisted_message_writes_nothing(client, realtime):
    realtime(sse_max_message_size=400)
    response = post(
        client, "/ws/send-to-channel", {"channel": "big", "message": {"content": "x" * 350}, "persist": True}
    )
    assert response.status_code == 413
    assert not ChannelMessage.objects.exists()
    ok = post(client, "/ws/send-to-channel", {"channel": "big", "message": {"content": "x"}, "persist": True})
    assert ok.json()["offset"] == 1  # the refused publish did not consume an offset


def test_stats_has_the_design_document_keys(client):
    response = client.get("/ws/stats")
    assert response.status_code == 200
    assert response.json() == {
        "websocket": {"total": 0, "max": 1000, "users": 0},
        "sse": {"total": 0, "max": 500, "users": 0},
        "channels": {"total": 0, "subscriptions": 0},
        "total_connections": 0,
    }


def _process(process_id="p1", **fields):
    from django.utils import timezone

    now = timezone.now()
    return ServerProcess.objects.create(
        id=process_id,
        bus_channel=f"bus.{process_id}",
        hostname="h",
        pid=1,
        started_at=now,
        last_heartbeat=now,
        **fields,
    )


def _connection(connection_id, process, transport="ws", user_id=None, channels=(), **fields):
    from django.utils import timezone

    now = timezone.now()
    connection = Connection.objects.create(
        id=connection_id,
        transport=transport,
        user_id=user_id,
        process=process,
        connected_at=now,
        last_seen=now,
        **fields,
    )
    for channel in channels:
        connection.subscriptions.create(channel=channel)
    return connection


def test_stats_and_connection_list_count_live_processes_only(client, admin_client):
    from datetime import timedelta

    from django.utils import timezone

    live = _process("live")
    dead = _process("dead")
    ServerProcess.objects.filter(id="dead").update(last_heartbeat=timezone.now() - timedelta(hours=1))
    _connection("c1", live, user_id="u1", channels=["news", "chat"])
    _connection("c2", live, user_id="u1", channels=["news"])
    _connection("c3", live, transport="sse", user_id="u2", channels=["news"])
    _connection("c4", live, closed_at=timezone.now())
    _connection("ghost", dead, user_id="u9", channels=["news"])
    stats = client.get("/ws/stats").json()
    assert stats["websocket"] == {"total": 2, "max": 1000, "users": 1}
    assert stats["sse"] == {"total": 1, "max": 500, "users": 1}
    assert stats["channels"] == {"total": 2, "subscriptions": 4}
    assert stats["total_connections"] == 3
    listed = admin_client.get("/ws/connections").json()
    assert listed["count"] == 3
    assert {c["id"] for c in listed["results"]} == {"c1", "c2", "c3"}
    assert admin_client.get("/ws/connections?transport=sse").json()["count"] == 1
    assert admin_client.get("/ws/connections?user_id=u1").json()["count"] == 2
    assert {c["id"] for c in admin_client.get("/ws/connections?channel=chat").json()["results"]} == {"c1"}
    assert admin_client.get("/ws/connections?transport=xmpp").status_code == 400
    page = admin_client.get("/ws/connections?page_size=2").json()
    assert len(page["results"]) == 2 and page["next"]
    (first,) = admin_client.get("/ws/connections?channel=chat").json()["results"]
    assert first["channels"] == ["chat", "news"] and first["transport"] == "ws" and first["process"] == "live"


def test_delete_unknown_connection_is_404(admin_client):
    for unknown in ("00000000-0000-4000-8000-000000000000", "nope", "a%00b"):
        response = admin_client.delete(f"/ws/connections/{unknown}")
        assert response.status_code == 404, unknown
        assert response.json()["type"] == "not_found"


@pytest.mark.parametrize("query", ["user_id=a%00b", "channel=a%00b", "channel=news%0A", "user_id=" + "u" * 65])
def test_connection_list_filters_are_validated(admin_client, query):
    response = admin_client.get("/ws/connections?" + query)
    assert response.status_code == 400, response.content
    assert response.json()["type"] in ("invalid_message", "invalid_channel")


def test_delete_connection_of_another_process_sends_close_command(admin_client, bus):
    process = _process("other")
    _connection("00000000-0000-4000-8000-00000000e111", process)
    response = admin_client.delete("/ws/connections/00000000-0000-4000-8000-00000000e111")
    assert response.status_code == 204
    (command,) = bus.sent["bus.other"]
    assert command == {
        "type": "hub.close",
        "connection_id": "00000000-0000-4000-8000-00000000e111",
        "code": 4409,
        "reason": "closed by an administrator",
    }


def test_channels_api_lists_subscribers_and_offsets(client):
    process = _process()
    _connection("c1", process, user_id="u1", channels=["news"])
    post(client, "/ws/send-to-channel", {"channel": "archive", "message": {"content": 1}, "persist": True})
    listed = client.get("/api/channels/").json()
    assert listed["count"] == 2
    assert listed["results"] == [
        {"name": "archive", "subscribers": 0, "offset": 1},
        {"name": "news", "subscribers": 1, "offset": 0},
    ]
    detail = client.get("/api/channels/news/").json()
    assert detail["presence"] == {"channel": "news", "connections": 1, "user_count": 1, "users": ["u1"]}
    assert client.get("/api/channels/bad%20name/").status_code == 400


def test_channel_list_is_paginated(client):
    process = _process()
    for n in range(5):
        _connection(f"c{n}", process, channels=[f"room-{n}"])
    first = client.get("/api/channels/?page_size=2").json()
    assert first["count"] == 5 and [c["name"] for c in first["results"]] == ["room-0", "room-1"] and first["next"]
    last = client.get("/api/channels/?page_size=2&page=3").json()
    assert [c["name"] for c in last["results"]] == ["room-4"] and last["next"] is None
    for bad in ("abc", "0", "-1"):
        refused = client.get(f"/api/channels/?page_size={bad}")
        assert refused.status_code == 400 and "page_size" in refused.json()["fields"], bad


def test_anonymous_callers_of_an_open_api_see_no_connections_and_no_protected_channels(client, admin_client):
    process = _process()
    _connection("c1", process, user_id="u1", channels=["news", "private-board", "presence-room"], ip="198.51.100.4")
    for path in ("/ws/connections", "/ws/connections/00000000-0000-4000-8000-000000000000"):
        refused = client.get(path)
        assert refused.status_code == 401 and refused.json()["type"] == "unauthenticated", path
    assert client.delete("/ws/connections/00000000-0000-4000-8000-000000000000").status_code == 401
    assert [c["name"] for c in client.get("/api/channels/").json()["results"]] == ["news"]
    for name in ("private-board", "presence-room", "user:u1"):
        assert client.get(f"/api/channels/{name}/").status_code == 403, name
    assert client.get("/ws/stats").status_code == 200
    everything = [c["name"] for c in admin_client.get("/api/channels/").json()["results"]]
    assert everything == ["news", "presence-room", "private-board"]
    assert admin_client.get("/api/channels/private-board/").status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/ws/send-to-channel", {"channel": "c", "message": {"content": 1}, "persits": True}),
        ("/ws/send-to-channel", {"channel": "c", "message": {"content": 1, "tpye": "x"}}),
        ("/ws/broadcast", {"message": {"content": 1}, "channel": "c"}),
        ("/ws/send-to-user", {"user_id": "u1", "message": {"content": 1}, "extra": 1}),
        ("/sse/send-to-channel", {"channel": "c", "data": 1, "evnet": "x"}),
        ("/sse/notification", {"title": "t", "content": "c", "level": "info"}),
    ],
)
def test_unknown_body_fields_are_refused(client, bus, path, body):
    response = post(client, path, body)
    assert response.status_code == 400, response.content
    fields = response.json()["fields"]
    assert any(key in str(fields) for key in ("persits", "tpye", "channel", "extra", "evnet", "level")), fields


def test_schema_and_docs_are_served_without_cdn(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/ws/send-to-channel" in schema.content and b"/sse/notification" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower() and "jsdelivr" not in html.lower()


def test_browsable_api_renders_html(client):
    response = client.get("/ws/stats", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and b"<html" in response.content


def test_api_root_and_landing_page(client):
    root = client.get("/api/").json()
    assert root["stats"].endswith("/ws/stats") and root["docs"].endswith("/api/docs/")
    assert root["sse_notification"].endswith("/sse/notification")
    assert root["notifications"].endswith("/api/notifications/")
    landing = client.get("/")
    assert landing.status_code == 200
    for link in (b"/admin/", b"/api/", b"/api/docs/"):
        assert link in landing.content


def test_database_down_is_a_retryable_503_not_a_500(client, monkeypatch):
    from django.db import OperationalError

    from streaming import history

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(history, "history_read", down)
    response = client.get("/api/channels/news/history/")
    assert response.status_code == 503
    assert response.json() == {"type": "unavailable", "error": "The database is unavailable; try again."}
    assert response.headers["Retry-After"]
