"""Python clients of the realtime server: WebSocket and Server-Sent Events, with reconnection.

Nothing here imports Django: the package runs in any Python 3.11+ process with `websockets` and
`httpx` installed. The design document's usage::

    from realtime_client import create_ws_client

    client = create_ws_client(host="localhost", port=8000, token=token)

    @client.on_message("text")
    async def handle_message(data):
        print(data["content"])

    await client.connect()
    await client.subscribe_to_channel("test_channel")
    await client.send_to_channel("test_channel", "Hello!")

The command line (`python -m realtime_client listen|publish …`) is in `__main__`.
"""

from realtime_client.backoff import Backoff
from realtime_client.contexts import (
    ClientState,
    ConnectedContext,
    DisconnectedContext,
    ErrorContext,
    ReconnectedContext,
    ResetContext,
)
from realtime_client.exceptions import (
    AccessDenied,
    AuthenticationFailed,
    ClientError,
    ConnectFailed,
    ConnectionLost,
    FatalError,
    NotConnected,
    ReconnectFailed,
    Refused,
    ReplyError,
    RequestTimeout,
    TransportError,
)
from realtime_client.positions import parse_event_id
from realtime_client.publisher import HTTPPublisher
from realtime_client.reconnecting import ReconnectingClient, process_exception
from realtime_client.sse_client import SSEClient, create_sse_client
from realtime_client.ws_client import WebSocketClient, create_ws_client

__all__ = [
    "AccessDenied",
    "AuthenticationFailed",
    "Backoff",
    "ClientError",
    "ClientState",
    "ConnectFailed",
    "ConnectedContext",
    "ConnectionLost",
    "DisconnectedContext",
    "ErrorContext",
    "FatalError",
    "HTTPPublisher",
    "NotConnected",
    "ReconnectFailed",
    "ReconnectedContext",
    "ReconnectingClient",
    "Refused",
    "ReplyError",
    "RequestTimeout",
    "ResetContext",
    "SSEClient",
    "TransportError",
    "WebSocketClient",
    "create_sse_client",
    "create_ws_client",
    "parse_event_id",
    "process_exception",
]
