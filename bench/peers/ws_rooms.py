"""Peer: a minimal `websockets` rooms server speaking our WebSocket dialect (README, "WebSocket
protocol") — the Python ceiling for many small channels.

Any path: the server greets with `connected`; `subscribe` joins a room (`subscribed` reply),
`send_to_channel` wraps the content once in an envelope of our shape, sends it to the room with
`websockets.broadcast` and answers `ack` `{id}`; `pong` and anything else is ignored.
Usage: python -m bench.peers.ws_rooms PORT
"""

import asyncio
import sys
import time
import uuid

import orjson
import uvloop
from websockets.asyncio.server import broadcast, serve

ROOMS: dict[str, set] = {}


def reply(type_: str, content: dict, request_id) -> bytes:
    frame = {"type": type_, "content": content}
    if request_id is not None:
        frame["request_id"] = request_id
    return orjson.dumps(frame)


async def handler(connection) -> None:
    connection_id, joined = str(uuid.uuid4()), set()
    await connection.send(orjson.dumps({"type": "connected", "data": {"connection_id": connection_id}}).decode())
    try:
        async for text in connection:
            frame = orjson.loads(text)
            action, data, request_id = frame.get("action"), frame.get("data") or {}, frame.get("request_id")
            if action == "subscribe":
                ROOMS.setdefault(data["channel"], set()).add(connection)
                joined.add(data["channel"])
                await connection.send(reply("subscribed", {"channel": data["channel"]}, request_id).decode())
            elif action == "send_to_channel":
                envelope = {"id": str(uuid.uuid4()), "type": data.get("type", "text"), "channel": data["channel"],
                            "content": data["content"], "sender": {"user_id": None, "connection_id": connection_id},
                            "timestamp": time.time(), "offset": None}  # fmt: skip
                broadcast(ROOMS.get(data["channel"], ()), orjson.dumps(envelope).decode())
                await connection.send(reply("ack", {"id": envelope["id"]}, request_id).decode())
    finally:
        for channel in joined:
            room = ROOMS.get(channel)
            room.discard(connection)
            if not room:
                del ROOMS[channel]


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, backlog=4096, ping_interval=30):
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
