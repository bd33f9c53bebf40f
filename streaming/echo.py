"""A WebSocket echo, mounted at `/ws/echo` only with RELIABILITY_ECHO_ROUTE=true.

It exists for protocol conformance runs (Autobahn|Testsuite, `make test-reliability`): it sits
behind the same server, session and identity middleware as `/ws/connect` and sends every message
back unchanged, so what the fuzzer measures is the WebSocket stack itself, not the product's
frame protocol. Never mount it in production.
"""

from __future__ import annotations

from typing import Any


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, then send every text or binary message back as it came, until the client leaves."""
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message.get("text") or ""})
        elif message["type"] == "websocket.disconnect":
            return
