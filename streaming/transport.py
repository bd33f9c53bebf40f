"""What the ASGI server does not give us: backpressure, and complete close frames under daphne.

daphne hands the application `functools.partial(server.handle_reply, protocol)` as `send`
(middleware may wrap it; channels' session middleware keeps it as `real_send`). Through that
protocol object we read the Twisted write buffer, and send close frames with any code and a reason:
daphne's own `websocket.close` handling drops the reason and autobahn refuses codes 1001 and 1013.
Under other servers (uvicorn) these fall back to plain ASGI, where `send` applies backpressure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from autobahn.util import encode_truncate

CLOSE_REASON_MAX = 123  # bytes: a close frame's payload is at most 125, 2 of them the code


def unwrap_send(send: Any) -> Any:
    """The server's own `send` under middleware wrappers (channels' session middleware keeps it
    as `real_send`). Frames sent after the handshake need none of the wrappers' work."""
    for _ in range(8):
        inner = getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            break
        send = inner
    return send


def write_buffer_probe(send: Any) -> Callable[[], int] | None:
    """A function returning the bytes waiting in daphne's socket write buffer, else None.

    daphne hands the application `functools.partial(server.handle_reply, protocol)` as `send`;
    the protocol's Twisted transport keeps unsent bytes in `dataBuffer` and `_tempDataBuffer`.
    Other servers (uvicorn) apply backpressure in `send` itself and need no probe.
    """
    protocol = daphne_protocol(send)
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "dataBuffer") or not hasattr(transport, "_tempDataLen"):
        return None

    def buffered() -> int:
        current = protocol.transport
        if current is None:
            return 0
        return len(current.dataBuffer) - current.offset + current._tempDataLen

    return buffered


def daphne_protocol(send: Any) -> Any:
    """daphne's protocol object behind `send`, or None under another server."""
    send = unwrap_send(send)
    if isinstance(send, functools.partial) and send.args:
        return send.args[0]
    return None


async def close_websocket(send: Any, code: int, reason: str) -> None:
    """Close an accepted WebSocket with `code` and `reason`, both reaching the client."""
    protocol = daphne_protocol(send)
    if protocol is not None and getattr(protocol, "state", None) == getattr(protocol, "STATE_OPEN", object()):
        protocol.sendCloseFrame(code=int(code), reasonUtf8=encode_truncate(reason, CLOSE_REASON_MAX), isReply=False)
        return
    await send({"type": "websocket.close", "code": int(code), "reason": reason})
