"""Peer: a minimal `websockets` broadcast server — the Python ceiling for WebSocket fan-out.

`/sub` subscribers get a `subscribed` hello, then every published message; a client on `/pub`
sends payloads, each wrapped once in an envelope of our size and sent with `websockets.broadcast`.
Usage: python -m bench.peers.ws_broadcast PORT
"""

import asyncio
import sys
import time
import uuid

import orjson
import uvloop
from websockets.asyncio.server import broadcast, serve

SUBSCRIBERS: set = set()


async def handler(connection) -> None:
    if connection.request.path.startswith("/pub"):
        async for content in connection:
            envelope = {"id": str(uuid.uuid4()), "type": "text", "channel": "news", "content": content,
                        "sender": None, "timestamp": time.time(), "offset": None}  # fmt: skip
            broadcast(SUBSCRIBERS, orjson.dumps(envelope).decode())
        return
    SUBSCRIBERS.add(connection)
    try:
        await connection.send('{"type":"subscribed"}')
        await connection.wait_closed()
    finally:
        SUBSCRIBERS.discard(connection)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, backlog=4096, ping_interval=30):
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
