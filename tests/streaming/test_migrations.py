"""Schema migrations that move data: run backwards and forwards on a real database."""

from __future__ import annotations

import orjson
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)


def migrate_to(target: tuple[str, str]):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


def test_0002_keeps_stored_envelopes_as_delivered_text():
    old = migrate_to(("streaming", "0001_initial"))
    Channel, ChannelMessage = old.get_model("streaming", "Channel"), old.get_model("streaming", "ChannelMessage")
    Channel.objects.create(name="kept", last_offset=1)
    ChannelMessage.objects.create(
        channel_id="kept", offset=1, message_id="m1", type="news", content={"title": "Привет"},
        sender={"user_id": "u1", "connection_id": "c1"}, timestamp="2026-01-01T00:00:00.000000Z",
        created_at=timezone.now(),
    )  # fmt: skip
    new = migrate_to(("streaming", "0002_message_text_channel_updated_at"))
    row = new.get_model("streaming", "ChannelMessage").objects.get(channel_id="kept", offset=1)
    assert orjson.loads(row.text) == {
        "id": "m1", "type": "news", "channel": "kept", "content": {"title": "Привет"},
        "sender": {"user_id": "u1", "connection_id": "c1"}, "timestamp": "2026-01-01T00:00:00.000000Z", "offset": 1,
    }  # fmt: skip
    assert new.get_model("streaming", "Channel").objects.get(name="kept").updated_at is not None
    back = migrate_to(("streaming", "0001_initial"))
    restored = back.get_model("streaming", "ChannelMessage").objects.get(channel_id="kept", offset=1)
    assert restored.content == {"title": "Привет"} and restored.sender["user_id"] == "u1"
    migrate_to(latest())


def latest() -> tuple[str, str]:
    """The newest migration of the app: where every other test expects the schema."""
    (leaf,) = MigrationExecutor(connection).loader.graph.leaf_nodes("streaming")
    return leaf


def test_0004_gives_channels_persisted_before_epochs_one():
    old = migrate_to(("streaming", "0003_server_process_plural"))
    old.get_model("streaming", "Channel").objects.create(name="before-epochs", last_offset=7)
    new = migrate_to(("streaming", "0004_channel_epoch"))
    epoch = new.get_model("streaming", "Channel").objects.get(name="before-epochs").epoch
    assert len(epoch) == 8 and epoch.isalnum()
    migrate_to(latest())
