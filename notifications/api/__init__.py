"""HTTP API of the notifications app (the same layout as `streaming.api`)."""
