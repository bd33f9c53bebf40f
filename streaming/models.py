"""What the realtime core keeps in the database: server processes, connections, channel history.

Live state is held in memory by each process (see `registry.py`); these rows make it visible to
every process, the API and the admin, and are written in batches, never once per message.
"""

from __future__ import annotations

from django.db import models

from streaming import protocol


class Transport(models.TextChoices):
    WEBSOCKET = "ws", "WebSocket"
    SSE = "sse", "Server-Sent Events"


class ServerProcess(models.Model):
    """A running server process; its heartbeat tells the others it still holds its connections."""

    id = models.CharField(primary_key=True, max_length=100)
    bus_channel = models.CharField(max_length=200, help_text="Channel-layer name for commands.")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_heartbeat = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "server process"
        verbose_name_plural = "server processes"

    def __str__(self) -> str:
        return self.id


class Connection(models.Model):
    """One WebSocket or SSE connection, open (closed_at is null) or closed."""

    id = models.CharField(primary_key=True, max_length=36)
    transport = models.CharField(max_length=3, choices=Transport.choices, db_index=True)
    user_id = models.CharField(max_length=64, null=True, blank=True, db_index=True)
    user_name = models.CharField(max_length=150, blank=True, default="")
    auth = models.CharField(max_length=16, default="anonymous")
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")
    process = models.ForeignKey(ServerProcess, on_delete=models.CASCADE, related_name="connections")
    connected_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    close_code = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-connected_at"]
        indexes = [models.Index(fields=["closed_at", "transport"])]

    def __str__(self) -> str:
        return f"{self.transport}:{self.id}"


class Subscription(models.Model):
    """An explicit channel subscription of an open connection (implicit channels are not rows)."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="subscriptions")
    channel = models.CharField(max_length=100, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "channel"], name="unique_subscription")]

    def __str__(self) -> str:
        return f"{self.connection_id} → {self.channel}"


class Channel(models.Model):
    """A channel that has persisted messages: the head of its gapless offset sequence."""

    name = models.CharField(primary_key=True, max_length=100)
    last_offset = models.BigIntegerField(default=0)
    epoch = models.CharField(
        max_length=16, default="", blank=True, help_text="Changes when the history is reset: offsets start again."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(null=True, db_index=True, help_text="When the last message was persisted.")

    def __str__(self) -> str:
        return self.name


class ChannelMessage(models.Model):
    """A persisted message in its channel's history, at its channel offset.

    The envelope is kept as the JSON text that was delivered (encoded once by the publish path):
    replays send it as it is, and any JSON value is stored faithfully (a `\u0000` escape too,
    which PostgreSQL's jsonb refuses).
    """

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="messages", db_column="channel_name")
    offset = models.BigIntegerField()
    message_id = models.CharField(max_length=protocol.MESSAGE_ID_MAX)
    type = models.CharField(max_length=64)
    text = models.TextField(help_text="The envelope as delivered (JSON).")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["channel", "offset"]
        constraints = [models.UniqueConstraint(fields=["channel", "offset"], name="unique_channel_offset")]

    def __str__(self) -> str:
        return f"{self.channel_id}#{self.offset}"

    def envelope(self) -> dict:
        """The message as delivered (the envelope of the README's "WebSocket protocol")."""
        return protocol.decode(self.text)
