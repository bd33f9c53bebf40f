"""Server-Sent Events client examples, to run against a server started with `make run`.

    python examples/sse_examples.py                        # every example, localhost:8000
    python examples/sse_examples.py --port 8001 channels   # one example, another port

REALTIME_HOST, REALTIME_PORT and EXAMPLE_WAIT (seconds an example waits for events, default 10)
do the same from the environment; REALTIME_API_KEY (one of the server's WS_API_KEYS) lets the
`errors` example close its own stream as an administrator would. `basic` is the design
document's example as written there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import httpx

# Run from a checkout with nothing installed: the client package is in clients/python.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))

from realtime_client import create_sse_client

HOST = os.environ.get("REALTIME_HOST", "localhost")
PORT = int(os.environ.get("REALTIME_PORT", "8000"))
WAIT = float(os.environ.get("EXAMPLE_WAIT", "10"))
API_KEY = os.environ.get("REALTIME_API_KEY")


async def basic() -> None:
    """The design document's example: send a notification and receive it on the stream."""
    # Создаем клиент
    client = create_sse_client(host=HOST, port=PORT)

    # Добавляем обработчики
    @client.on_event("notification")
    async def handle_notification(event_data):
        print(f"Уведомление: {event_data}")

    # Подключаемся
    await client.connect()

    # Отправляем уведомление
    await client.send_notification(title="Тест", content="Тестовое уведомление")

    # Ждем события
    await asyncio.sleep(WAIT)

    # Отключаемся
    await client.disconnect()


async def channels() -> None:
    """A stream of chosen channels, and events published to one of them over HTTP."""
    client = create_sse_client(host=HOST, port=PORT, channels=["news"])

    @client.on_event("news_update")
    async def handle_news(event_data):
        print(f"news_update (id {event_data['id']}): {event_data['data']['content']}")

    await client.connect()
    print(f"streaming {client.connection.channels}")
    await client.send_to_channel(
        "news", "news_update", {"title": "Новая статья", "content": "Содержимое новости"}, persist=True
    )
    await asyncio.sleep(WAIT)
    await client.disconnect()


async def errors() -> None:
    """The design document's SSE error handler: an administrator closes the stream, the client resumes."""
    client = create_sse_client(host=HOST, port=PORT, api_key=API_KEY, reconnect_interval=1)
    resumed = asyncio.Event()

    @client.on_event("error")
    async def handle_error(event_data):
        error = event_data.get("data", {})
        print(f"SSE ошибка: {error}")

    @client.on_reconnect
    def on_resumed(context):
        print(f"stream resumed after {context.attempts} attempt(s)")
        resumed.set()

    await client.connect()
    # What an administrator does from /ws/connections: close this very stream.
    url = client.endpoint.http_url(f"/ws/connections/{client.connection.connection_id}")
    async with httpx.AsyncClient() as http:
        response = await http.delete(url, headers=client.endpoint.headers())
    print(f"DELETE /ws/connections/… -> HTTP {response.status_code}")
    if response.status_code == 401:
        print("closing connections needs an admin: set REALTIME_API_KEY to one of the server's WS_API_KEYS")
    if response.status_code == 204:
        await asyncio.wait_for(resumed.wait(), timeout=30)
    await client.disconnect()


async def reconnect() -> None:
    """The design document's reconnection settings; restart the server meanwhile to see them work."""
    sse_client = create_sse_client(
        host=HOST,
        port=PORT,
        auto_reconnect=True,
        max_reconnect_attempts=10,
        reconnect_interval=5,
    )

    @sse_client.on_disconnect
    def disconnected(context):
        print(f"disconnected: {context.reason} (reconnecting: {context.reconnecting})")

    @sse_client.on_reconnect
    def resumed(context):
        print(f"resumed from {sse_client.last_event_id}; recovered: {context.recovered}")

    @sse_client.on_event("message")
    def show(event_data):
        print(f"broadcast: {event_data['data']['content']}")

    await sse_client.connect()
    await sse_client.broadcast("Сообщение всем пользователям")
    await asyncio.sleep(WAIT)
    await sse_client.disconnect()


EXAMPLES = {"basic": basic, "channels": channels, "errors": errors, "reconnect": reconnect}


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
