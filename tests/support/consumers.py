"""Talking to the WebSocket consumer in process (channels' WebsocketCommunicator)."""

from __future__ import annotations

from typing import Any


async def request(
    communicator: Any, action: str, data: Any = None, request_id: Any = "r1", *, skip: bool = False
) -> dict:
    """Send a frame; return the next frame, or with `skip` the first that carries `request_id`
    back (deliveries and heartbeats in between are passed over)."""
    frame = {"action": action, "request_id": request_id}
    if data is not None:
        frame["data"] = data
    await communicator.send_json_to(frame)
    while True:
        reply = await communicator.receive_json_from(timeout=3)
        if not skip or reply.get("request_id") == request_id:
            return reply
