"""Live models (streaming/live.py) in process: what a save, a delete or a rollback writes and
delivers, moves between list channels, `notify` for bulk writes, who may follow a live channel,
and snapshots with positions over WebSocket, HTTP and the Python helper. The example application
is examples/documents; the same flows on real daphne are in tests/e2e/test_live_models.py."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction
from rest_framework.test import APIClient

from examples.documents.models import Document
from examples.documents.serializers import DocumentSerializer
from streaming import live
from streaming.auth import Identity, authenticator, authorize_publish
from streaming.errors import Forbidden, NotFound
from streaming.models import Channel, ChannelMessage

pytestmark = pytest.mark.django_db(transaction=True)


def messages(channel: str) -> list[tuple[int, str, dict]]:
    return [
        (row.offset, row.type, row.envelope()["content"])
        for row in ChannelMessage.objects.filter(channel_id=channel).order_by("offset")
    ]


def jwt(user_id: str) -> str:
    return authenticator.create_access_token({"sub": user_id})


def identity(user: User | None) -> Identity:
    return Identity("jwt", user_id=str(user.pk)) if user else Identity("anonymous")


# -- what a change publishes ---------------------------------------------------------------------


def test_save_and_delete_publish_persisted_envelopes_to_the_object_and_list_channels():
    document = Document.objects.create(title="draft")
    channel = f"doc:{document.pk}"
    with transaction.atomic():
        document.title = "final"
        document.save()
    document.delete()

    events = messages(channel)
    assert [(offset, kind) for offset, kind, _ in events] == [(1, "created"), (2, "updated"), (3, "deleted")]
    created, updated, deleted = (content for _, _, content in events)
    assert created["model"] == "documents.document"
    assert created["pk"] == updated["pk"] == deleted["pk"] == int(channel.split(":")[1])
    assert created["data"]["title"] == "draft" and updated["data"]["title"] == "final"
    assert deleted["data"]["title"] == "final"  # what it was, serialized before the delete
    assert [kind for _, kind, _ in messages("docs:general")] == ["created", "updated", "deleted"]


def test_a_rolled_back_save_writes_and_delivers_nothing(django_capture_on_commit_callbacks):
    document = Document.objects.create(title="kept")
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        document.title = "lost"
        document.save()
        raise RuntimeError("abandoned")
    assert callbacks == []  # no delivery was scheduled
    assert [kind for _, kind, _ in messages(f"doc:{document.pk}")] == ["created"]
    assert Channel.objects.get(name=f"doc:{document.pk}").last_offset == 1  # the offset was given back


def test_moving_between_list_channels_leaves_one_and_joins_the_other():
    document = Document.objects.create(title="t", folder="inbox")
    fresh = Document.objects.get(pk=document.pk)  # loaded from the database: its folder is remembered
    fresh.folder = "archive"
    fresh.save()
    assert [kind for _, kind, _ in messages("docs:inbox")] == ["created", "deleted"]
    assert [kind for _, kind, _ in messages("docs:archive")] == ["created"]
    assert [kind for _, kind, _ in messages(f"doc:{document.pk}")] == ["created", "updated"]


def test_bulk_writes_publish_through_notify():
    created = Document.objects.bulk_create([Document(title=f"b{n}", folder="bulk") for n in range(3)])
    assert messages("docs:bulk") == []  # bulk_create sends no signals
    assert live.notify(created, "created") == 3
    Document.objects.filter(folder="bulk").update(body="changed")
    live.notify(Document.objects.filter(folder="bulk"), "updated")
    events = messages("docs:bulk")
    assert [kind for _, kind, _ in events] == ["created"] * 3 + ["updated"] * 3
    assert all(content["data"]["body"] == "changed" for _, kind, content in events if kind == "updated")
    with pytest.raises(ValueError, match="event is one of"):
        live.notify(created, "renamed")
    with pytest.raises(ValueError, match="not registered"):
        live.notify([User(username="x")], "updated")


def test_registration_errors_are_named():
    with pytest.raises(ValueError, match="names one field"):
        live.register(User, serializer=DocumentSerializer, channel="user-{pk}-{username}")
    with pytest.raises(ValueError, match="not a unique field"):
        live.register(User, serializer=DocumentSerializer, channel="people:{first_name}")
    with pytest.raises(ValueError, match="already registered"):
        live.register(Document, serializer=DocumentSerializer)
    with pytest.raises(ValueError, match="placeholder is a field name"):
        live.register(User, serializer=DocumentSerializer, channel="u:{pk!r}")
    assert live.registration(User) is None


# -- who may follow -----------------------------------------------------------------------------


def test_object_permission_decides_who_follows_a_live_channel():
    owner, other = User.objects.create_user("owner"), User.objects.create_user("other")
    secret = Document.objects.create(title="s", owner=owner, private=True)
    public = Document.objects.create(title="p")
    live.authorize(identity(owner), f"doc:{secret.pk}")
    with pytest.raises(Forbidden):
        live.authorize(identity(other), f"doc:{secret.pk}")
    with pytest.raises(Forbidden):
        live.authorize(identity(None), f"doc:{secret.pk}")
    live.authorize(identity(None), f"doc:{public.pk}")
    live.authorize(Identity("api_key", role="admin"), f"doc:{secret.pk}")  # admins are not asked
    with pytest.raises(NotFound, match="deleted or never existed"):
        live.authorize(identity(owner), "doc:999999")
    with pytest.raises(Forbidden):
        live.authorize(identity(None), "docs:general")  # the example's list permission: signed-in users
    live.authorize(identity(other), "docs:general")
    live.authorize(identity(None), "unrelated-channel")


def test_default_permission_is_djangos_view_permission():
    from rest_framework import serializers

    class UserSerializer(serializers.ModelSerializer):
        class Meta:
            model = User
            fields = ["id", "username"]

    live.register(User, serializer=UserSerializer, channel="account:{pk}", list_channel="accounts")
    try:
        viewer, plain = User.objects.create_user("viewer"), User.objects.create_user("plain")
        viewer.user_permissions.add(Permission.objects.get(codename="view_user"))
        live.authorize(identity(viewer), f"account:{plain.pk}")
        live.authorize(identity(viewer), "accounts")
        with pytest.raises(Forbidden):
            live.authorize(identity(plain), f"account:{viewer.pk}")
        with pytest.raises(Forbidden):
            live.authorize(identity(plain), "accounts")
    finally:
        live.unregister(User)


def test_clients_may_not_publish_to_live_channels():
    with pytest.raises(Forbidden, match="only the server publishes"):
        authorize_publish(Identity("jwt", user_id="1"), "doc:1")
    with pytest.raises(Forbidden, match="only the server publishes"):
        authorize_publish(Identity("jwt", user_id="1"), "docs:general")
    authorize_publish(Identity("jwt", user_id="1"), "documents-chat")


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshot_of_an_object_and_of_a_list_with_their_positions(realtime):
    realtime(live_snapshot_max_items=2)
    first = Document.objects.create(title="one", folder="snap")
    Document.objects.create(title="two", folder="snap")
    Document.objects.create(title="three", folder="snap")
    Document.objects.create(title="hidden", folder="snap", private=True)  # not in the example's queryset

    one = live.channel_snapshot(f"doc:{first.pk}")
    assert (one.offset, one.data["title"], one.has_more) == (1, "one", False)
    assert one.epoch == Channel.objects.get(name=f"doc:{first.pk}").epoch

    listed = live.channel_snapshot("docs:snap")
    assert [item["title"] for item in listed.data] == ["one", "two"]
    assert listed.has_more is True
    assert listed.offset == 4  # four creations were published to the folder
    with pytest.raises(NotFound, match="not a live model channel"):
        live.channel_snapshot("plain-channel")


def test_snapshot_helper_for_views_reads_data_and_position_together():
    document = Document.objects.create(title="v1")
    snapshot = live.snapshot(f"doc:{document.pk}", lambda: Document.objects.get(pk=document.pk).title)
    assert (snapshot.data, snapshot.offset) == ("v1", 1)
    assert snapshot.as_dict() == {
        "channel": f"doc:{document.pk}", "offset": 1, "epoch": snapshot.epoch, "data": "v1", "has_more": False,
    }  # fmt: skip
    empty = live.snapshot("never-published", lambda: [])
    assert empty.offset == 0


def test_snapshot_over_http_is_authorized_like_a_subscription():
    owner, other = User.objects.create_user("o"), User.objects.create_user("x")
    secret = Document.objects.create(title="s", owner=owner, private=True)
    http = APIClient()
    url = f"/api/channels/doc:{secret.pk}/snapshot/"
    ok = http.get(url, HTTP_AUTHORIZATION=f"Bearer {jwt(str(owner.pk))}")
    assert ok.status_code == 200, ok.content
    assert ok.json() == {
        "channel": f"doc:{secret.pk}", "offset": 1, "epoch": ok.json()["epoch"],
        "data": DocumentSerializer(secret).data | {"updated_at": ok.json()["data"]["updated_at"]}, "has_more": False,
    }  # fmt: skip
    refused = http.get(url, HTTP_AUTHORIZATION=f"Bearer {jwt(str(other.pk))}")
    assert refused.status_code == 403 and refused.json()["type"] == "forbidden"
    missing = http.get("/api/channels/doc:424242/snapshot/", HTTP_AUTHORIZATION=f"Bearer {jwt(str(owner.pk))}")
    assert missing.status_code == 404 and missing.json()["type"] == "not_found"
    unrelated = http.get("/api/channels/plain/snapshot/", HTTP_AUTHORIZATION=f"Bearer {jwt(str(owner.pk))}")
    assert unrelated.status_code == 404
    bad = http.get("/api/channels/-bad-/snapshot/", HTTP_AUTHORIZATION=f"Bearer {jwt(str(owner.pk))}")
    assert bad.status_code == 400


# -- over the WebSocket protocol, in process ------------------------------------------------------


async def test_websocket_subscriber_receives_changes_and_snapshot_then_since(connect):
    from asgiref.sync import sync_to_async

    owner = await sync_to_async(User.objects.create_user)("ws-owner")
    document = await sync_to_async(Document.objects.create)(title="start", owner=owner, private=True)
    channel = f"doc:{document.pk}"
    client = await connect(f"token={jwt(str(owner.pk))}")
    await client.send_json_to({"action": "snapshot", "data": {"channel": channel}, "request_id": 1})
    reply = await client.receive_json_from(timeout=5)
    assert reply["type"] == "snapshot" and reply["request_id"] == 1
    snap = reply["content"]
    assert (snap["data"]["title"], snap["offset"]) == ("start", 1)

    def edit(title: str) -> None:
        with transaction.atomic():
            document.title = title
            document.save()

    await sync_to_async(edit)("after-snapshot")  # before the subscription: recovered by since
    await client.send_json_to(
        {"action": "subscribe", "data": {"channel": channel, "since": snap["offset"], "epoch": snap["epoch"]}}
    )
    frames = [await client.receive_json_from(timeout=5) for _ in range(2)]
    kinds = {frame["type"]: frame for frame in frames}
    assert kinds["updated"]["content"]["data"]["title"] == "after-snapshot"
    assert kinds["updated"]["offset"] == 2
    assert kinds["subscribed"]["content"]["recovered"] is True
    await sync_to_async(edit)("live")
    frame = await client.receive_json_from(timeout=5)
    assert (frame["type"], frame["offset"], frame["content"]["data"]["title"]) == ("updated", 3, "live")

    stranger = await connect(f"token={jwt('999')}")
    await stranger.send_json_to({"action": "subscribe", "data": {"channel": channel}, "request_id": "s"})
    refused = await stranger.receive_json_from(timeout=5)
    assert refused["type"] == "error" and refused["content"]["type"] == "forbidden"
    await stranger.send_json_to({"action": "snapshot", "data": {"channel": channel}, "request_id": "n"})
    assert (await stranger.receive_json_from(timeout=5))["content"]["type"] == "forbidden"
    await client.send_json_to({"action": "send_to_channel", "data": {"channel": channel, "content": 1}})
    assert (await client.receive_json_from(timeout=5))["content"]["type"] == "forbidden"


def test_a_permission_check_that_raises_refuses_that_request_only(caplog):
    def broken(user, obj):
        raise RuntimeError("boom")

    from django.contrib.auth.models import Group
    from rest_framework import serializers

    from streaming.errors import Unavailable

    class GroupSerializer(serializers.ModelSerializer):
        class Meta:
            model = Group
            fields = ["id", "name"]

    live.register(Group, serializer=GroupSerializer, channel="group:{pk}", permission=broken)
    try:
        group = Group.objects.create(name="g")
        with pytest.raises(Unavailable, match=r"permission check of auth\.group failed"):
            live.authorize(Identity("jwt", user_id="1"), f"group:{group.pk}")
        assert "boom" in caplog.text
        live.authorize(Identity("anonymous"), "unrelated")
    finally:
        live.unregister(Group)
