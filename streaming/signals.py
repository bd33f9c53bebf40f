"""Django signals of the realtime core."""

from django.dispatch import Signal

# Sent when a WebSocket client sends `{"action": "message"}`, after the echo to the sender's own
# connections. Receivers get `connection_id`, `identity` (streaming.auth.Identity), `content` and
# `envelope` (the delivered envelope). Sync and async receivers are both supported.
client_message = Signal()
