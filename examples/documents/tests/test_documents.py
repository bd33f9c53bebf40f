"""The example application's tests, written with the test kit (docs/testing.md): what a view's
save publishes, that a rolled-back one publishes nothing, who may follow a document, and a
snapshot followed by a subscription `since` its position."""

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from examples.documents.models import Document

pytestmark = pytest.mark.django_db(transaction=True)  # the views' commits are real: on_commit runs


def test_saving_in_a_view_publishes_the_document(client, realtime_published):
    created = client.post("/documents/", {"title": "Plan", "folder": "team"}, content_type="application/json")
    pk = created.json()["id"]
    client.post(f"/documents/{pk}/", {"title": "Plan B"}, content_type="application/json")

    realtime_published.assert_published(channel=f"doc:{pk}", type="created", persist=True)
    updated = realtime_published.assert_published(channel=f"doc:{pk}", type="updated")
    assert updated.content["data"]["title"] == "Plan B" and updated.offset == 2
    realtime_published.assert_published(channel="docs:team", type="updated", content=lambda c: c["pk"] == pk)


def test_a_rolled_back_save_publishes_nothing(client, realtime_published):
    pk = Document.objects.create(title="Kept").pk
    realtime_published.clear()
    answer = client.post(f"/documents/{pk}/", {"title": "Lost", "fail": True}, content_type="application/json")
    assert answer.status_code == 409
    realtime_published.assert_not_published(type="updated")
    assert Document.objects.get(pk=pk).title == "Kept"


async def test_only_the_owner_follows_a_private_document(realtime_client):
    owner = await sync_to_async(User.objects.create_user)("ada")
    secret = await sync_to_async(Document.objects.create)(title="Secret", owner=owner, private=True)
    from streaming.testing import ReplyError

    async with realtime_client(user_id="999999") as stranger:
        with pytest.raises(ReplyError) as refused:
            await stranger.subscribe(f"doc:{secret.pk}")
        assert refused.value.code == "forbidden"
    async with realtime_client(user_id=str(owner.pk)) as client:
        await client.subscribe(f"doc:{secret.pk}")


async def test_snapshot_then_since_shows_each_change_once(realtime_client):
    document = await sync_to_async(Document.objects.create)(title="v1")
    channel = f"doc:{document.pk}"

    async def rename(title: str) -> None:
        document.title = title
        await document.asave()

    async with realtime_client() as client:
        snapshot = await client.snapshot(channel)
        assert (snapshot["data"]["title"], snapshot["offset"]) == ("v1", 1)
        await rename("v2")  # after the snapshot, before the subscription
        await client.subscribe(channel, since=snapshot["offset"], epoch=snapshot["epoch"])
        await rename("v3")
        titles = [(await client.receive_message(channel))["content"]["data"]["title"] for _ in range(2)]
        assert titles == ["v2", "v3"]
        await client.assert_no_message(timeout=0.3)
