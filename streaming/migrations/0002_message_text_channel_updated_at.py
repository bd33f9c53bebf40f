"""Channel messages keep their delivered envelope as JSON text; channel heads record their last
publish, so that heads of channels idle past the history TTL can be deleted."""

import orjson
from django.db import migrations, models


def envelopes_to_text(apps, schema_editor):
    ChannelMessage = apps.get_model("streaming", "ChannelMessage")
    for row in ChannelMessage.objects.all().iterator(chunk_size=500):
        envelope = {
            "id": row.message_id,
            "type": row.type,
            "channel": row.channel_id,
            "content": row.content,
            "sender": row.sender,
            "timestamp": row.timestamp,
            "offset": row.offset,
        }
        row.text = orjson.dumps(envelope).decode()
        row.save(update_fields=["text"])


def text_to_envelopes(apps, schema_editor):
    ChannelMessage = apps.get_model("streaming", "ChannelMessage")
    for row in ChannelMessage.objects.all().iterator(chunk_size=500):
        envelope = orjson.loads(row.text)
        row.content, row.sender, row.timestamp = envelope["content"], envelope["sender"], envelope["timestamp"]
        row.save(update_fields=["content", "sender", "timestamp"])


def heads_updated_now(apps, schema_editor):
    Channel = apps.get_model("streaming", "Channel")
    Channel.objects.filter(updated_at__isnull=True).update(updated_at=models.F("created_at"))


class Migration(migrations.Migration):
    dependencies = [("streaming", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="channelmessage",
            name="text",
            field=models.TextField(default="", help_text="The envelope as delivered (JSON)."),
            preserve_default=False,
        ),
        migrations.RunPython(envelopes_to_text, text_to_envelopes),
        # A default lets the reverse migration add the column back to existing rows.
        migrations.AlterField(
            model_name="channelmessage",
            name="timestamp",
            field=models.CharField(default="", help_text="The envelope timestamp (ISO-8601).", max_length=40),
        ),
        migrations.RemoveField(model_name="channelmessage", name="content"),
        migrations.RemoveField(model_name="channelmessage", name="sender"),
        migrations.RemoveField(model_name="channelmessage", name="timestamp"),
        migrations.AddField(
            model_name="channel",
            name="updated_at",
            field=models.DateTimeField(db_index=True, help_text="When the last message was persisted.", null=True),
        ),
        migrations.RunPython(heads_updated_now, migrations.RunPython.noop),
    ]
