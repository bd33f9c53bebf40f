"""Command line: `listen` prints delivered envelopes as JSON lines, `publish` sends one over HTTP.

    python -m realtime_client listen --url ws://127.0.0.1:8000 --channel news [--token T] [--api-key K] [--sse]
    python -m realtime_client publish --url http://127.0.0.1:8000 --channel news --content '{"a":1}' [--persist]

`listen` writes one JSON line per envelope to stdout (status lines go to stderr) and keeps going
across reconnections; `--count N` stops after N envelopes. `publish` prints the server's JSON
reply. Exit status: 0 done, 1 client error (reported on stderr), 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from realtime_client.contexts import ReconnectedContext
from realtime_client.endpoint import Endpoint
from realtime_client.exceptions import ClientError
from realtime_client.publisher import HTTPPublisher
from realtime_client.reconnecting import ReconnectingClient
from realtime_client.sse_client import SSEClient
from realtime_client.ws_client import WebSocketClient


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m realtime_client", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    listen = commands.add_parser("listen", help="print every envelope delivered to the given channels")
    listen.add_argument(
        "--url", type=server_url, default="ws://127.0.0.1:8000", help="ws://, wss://, http:// or https://"
    )
    listen.add_argument("--channel", action="append", default=[], help="a channel to join (repeatable)")
    listen.add_argument("--sse", action="store_true", help="listen over Server-Sent Events instead of WebSocket")
    listen.add_argument("--count", type=int, default=0, help="exit after this many envelopes (0: never)")
    listen.add_argument("--reconnect-interval", type=float, default=5.0, help="initial backoff, seconds")
    listen.add_argument("--max-reconnect-attempts", type=int, default=10)

    publish = commands.add_parser("publish", help="publish one message to a channel over HTTP")
    publish.add_argument("--url", type=server_url, default="http://127.0.0.1:8000", help="server URL")
    publish.add_argument("--channel", required=True)
    publish.add_argument("--content", required=True, help="JSON, or else sent as a string")
    publish.add_argument("--type", default=None, help="envelope type (server default: message)")
    publish.add_argument("--persist", action="store_true", help="store in the channel's history")

    for command in (listen, publish):
        command.add_argument("--token", default=None, help="a JWT access token")
        command.add_argument("--api-key", default=None, help="an API key")
    return parser


def server_url(text: str) -> str:
    try:
        Endpoint.from_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def open_listener(args: argparse.Namespace) -> ReconnectingClient:
    endpoint, path = Endpoint.from_url(args.url)
    options: dict[str, Any] = {
        "token": args.token,
        "api_key": args.api_key,
        "secure": endpoint.secure,
        "reconnect_interval": args.reconnect_interval,
        "max_reconnect_attempts": args.max_reconnect_attempts,
    }
    if path:
        options["path"] = path
    if args.sse:
        return SSEClient(endpoint.host, endpoint.port, channels=args.channel, **options)
    return WebSocketClient(endpoint.host, endpoint.port, **options)


async def listen(args: argparse.Namespace) -> int:
    client = open_listener(args)
    client.on_reconnect(lambda context: status(f"reconnected after {context.attempts} attempts: {_recovery(context)}"))
    client.on_disconnect(lambda context: status(f"disconnected: {context.reason}"))
    client.on_reset(lambda context: status(f"{context.channel}: history reset, now {context.offset}-{context.epoch}"))
    messages = client.messages()
    try:
        await client.connect()
        if isinstance(client, WebSocketClient):
            for channel in args.channel:
                await client.subscribe_to_channel(channel)
        connection_id = client.connection.connection_id if client.connection else "?"
        status(f"listening on {client.url} channels={','.join(args.channel) or '-'} connection={connection_id}")
        received = 0
        async for envelope in messages:
            print(json.dumps(envelope, ensure_ascii=False), flush=True)
            received += 1
            if received == args.count:
                break
    finally:
        messages.close()
        await client.disconnect()
    return 0


async def publish(args: argparse.Namespace) -> int:
    endpoint, _ = Endpoint.from_url(args.url, token=args.token, api_key=args.api_key)
    publisher = HTTPPublisher(endpoint)
    try:
        reply = await publisher.send_to_channel(
            args.channel, parse_content(args.content), type=args.type, persist=args.persist
        )
    finally:
        await publisher.aclose()
    print(json.dumps(reply, ensure_ascii=False), flush=True)
    return 0


def parse_content(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def status(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _recovery(context: ReconnectedContext) -> str:
    outcomes = [f"{channel} {'recovered' if ok else 'NOT recovered'}" for channel, ok in context.recovered.items()]
    return ", ".join(outcomes) or "no channels"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = listen if args.command == "listen" else publish
    try:
        return asyncio.run(command(args))
    except ClientError as error:
        status(f"error: {type(error).__name__}: {error}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
