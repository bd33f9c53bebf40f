"""Peer: python-socketio room broadcast under uvicorn (the popular Python WebSocket server).

Clients emit `subscribe` (channel) and are put in that room; a publisher emits `publish`
`{channel, content}` and the server emits `message` with an envelope of our size to the room
(and acknowledges with `{id}` when the publisher asks for an ack, as the chat scenario does).
Usage: python -m uvicorn bench.peers.socketio_room:app --loop uvloop --port PORT
"""

import time
import uuid

import socketio

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], ping_interval=30)
app = socketio.ASGIApp(sio)


@sio.on("subscribe")
async def subscribe(sid: str, channel: str) -> None:
    await sio.enter_room(sid, channel)
    await sio.emit("subscribed", channel, to=sid)


@sio.on("publish")
async def publish(sid: str, data: dict) -> dict:
    envelope = {"id": str(uuid.uuid4()), "type": "text", "channel": data["channel"], "content": data["content"],
                "sender": None, "timestamp": time.time(), "offset": None}  # fmt: skip
    await sio.emit("message", envelope, to=data["channel"])
    return {"id": envelope["id"]}
