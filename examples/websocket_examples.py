"""WebSocket client examples, to run against a server started with `make run`.

    python examples/websocket_examples.py                       # every example, localhost:8000
    python examples/websocket_examples.py --port 8001 errors    # one example, another port

REALTIME_HOST, REALTIME_PORT and EXAMPLE_WAIT (seconds an example waits for events, default 10)
do the same from the environment. `basic` is the design document's example as written there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

# Run from a checkout with nothing installed: the client package is in clients/python.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))

from realtime_client import ReplyError, create_ws_client

HOST = os.environ.get("REALTIME_HOST", "localhost")
PORT = int(os.environ.get("REALTIME_PORT", "8000"))
WAIT = float(os.environ.get("EXAMPLE_WAIT", "10"))


async def basic() -> None:
    """The design document's example: subscribe, send, print what arrives."""
    # Создаем клиент
    client = create_ws_client(host=HOST, port=PORT)

    # Добавляем обработчики
    @client.on_message("text")
    async def handle_message(data):
        print(f"Получено: {data}")

    # Подключаемся
    await client.connect()

    # Подписываемся на канал
    await client.subscribe_to_channel("test_channel")

    # Отправляем сообщение
    await client.send_to_channel("test_channel", "Привет!")

    # Ждем события
    await asyncio.sleep(WAIT)

    # Отключаемся
    await client.disconnect()


async def channels() -> None:
    """Several channels, a persisted message, history, presence, and leaving a channel."""
    client = create_ws_client(host=HOST, port=PORT)

    @client.on_message("*")
    def show(frame):
        if frame.get("channel"):  # delivered envelopes; replies and heartbeats have no channel
            print(f"[{frame['channel']}] {frame['type']}: {frame['content']}")

    await client.connect()
    await client.subscribe_to_channel("news")
    await client.subscribe_to_channel("notifications")
    ack = await client.send_to_channel("news", {"title": "Kept for late subscribers"}, persist=True)
    print(f"persisted in news at offset {ack['offset']}")
    page = await client.history("news", limit=5)
    print(f"news history: {len(page['messages'])} newest message(s), head offset {page['offset']}")
    presence = await client.presence("news")
    print(f"news has {presence['connections']} subscriber(s)")
    await client.unsubscribe_from_channel("news")
    print(f"still subscribed to: {client.channels}")
    await asyncio.sleep(WAIT)
    await client.disconnect()


async def personal() -> None:
    """Messages to a user (every connection of theirs), and a client message echoed back."""
    client = create_ws_client(host=HOST, port=PORT)

    @client.on_message("message")
    def echoed(envelope):
        print(f"echo of my message: {envelope['content']}")

    await client.connect()
    ack = await client.send_to_user("user123", "Личное сообщение")
    print(f"sent to user123 as {ack['id']}")
    await client.send_message({"hello": "server"})
    await asyncio.sleep(WAIT)
    await client.disconnect()


async def errors() -> None:
    """The design document's error handler; a bad request also raises ReplyError at the caller."""
    client = create_ws_client(host=HOST, port=PORT)

    @client.on_message("error")
    async def handle_error(data):
        error_type = data.get("content", {}).get("type")
        error_message = data.get("content", {}).get("error")
        print(f"Ошибка {error_type}: {error_message}")

    await client.connect()
    try:
        await client.subscribe_to_channel("not a channel!")
    except ReplyError as error:
        print(f"subscribe_to_channel raised ReplyError with code {error.code!r}")
    await client.disconnect()


async def reconnect() -> None:
    """The design document's reconnection settings; restart the server meanwhile to see them work."""
    client = create_ws_client(
        host=HOST,
        port=PORT,
        auto_reconnect=True,
        max_reconnect_attempts=10,
        reconnect_interval=5,
    )

    @client.on_connect
    def connected(context):
        print(f"connected: {context.connection_id} (reconnected: {context.reconnected})")

    @client.on_disconnect
    def disconnected(context):
        print(f"disconnected: {context.reason} (reconnecting: {context.reconnecting})")

    @client.on_reconnect
    def restored(context):
        print(f"channels restored after {context.attempts} attempt(s); recovered: {context.recovered}")

    await client.connect()
    await client.subscribe_to_channel("test_channel")
    print(f"ping: {await client.ping() * 1000:.1f} ms")
    await asyncio.sleep(WAIT)
    await client.disconnect()


EXAMPLES = {"basic": basic, "channels": channels, "personal": personal, "errors": errors, "reconnect": reconnect}


async def run(names: list[str]) -> None:
    for name in names:
        print(f"== {name} ==", flush=True)
        await EXAMPLES[name]()


def main() -> None:
    global HOST, PORT, WAIT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", nargs="*", metavar="example", help=f"any of {', '.join(EXAMPLES)} (default: all)")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--wait", type=float, default=WAIT, help="seconds each example waits for events")
    args = parser.parse_args()
    unknown = [name for name in args.examples if name not in EXAMPLES]
    if unknown:
        parser.error(f"unknown example(s): {', '.join(unknown)}")
    HOST, PORT, WAIT = args.host, args.port, args.wait
    asyncio.run(run(args.examples or list(EXAMPLES)))


if __name__ == "__main__":
    main()
