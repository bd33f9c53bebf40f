"""Writing to daphne's connections: backpressure, complete close frames, aborts, direct writes.

daphne hands the application `functools.partial(server.handle_reply, protocol)` as `send`
(middleware may wrap it; channels' session middleware keeps it as `real_send`). Through that
protocol object we read the Twisted write buffer, and send close frames with any code and a reason:
daphne's own `websocket.close` handling drops the reason and autobahn refuses codes 1001 and 1013.
Under other servers, or when the adapter is not active (see the package), these fall back to
plain ASGI, where `send` applies backpressure.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from autobahn.util import encode_truncate
from autobahn.websocket.protocol import WebSocketProtocol

from streaming.daphne_adapter import active

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
    """daphne's protocol object behind `send`, or None under another server (or an unknown daphne)."""
    send = unwrap_send(send)
    if isinstance(send, functools.partial) and send.args and active():
        return send.args[0]
    return None


def abort_connection(send: Any) -> bool:
    """Drop the TCP connection behind `send` at once, whatever is still unsent; False when it
    cannot be done here (another server: its `send` applies backpressure instead)."""
    protocol = daphne_protocol(send)
    transport = getattr(getattr(protocol, "channel", None), "transport", None) or getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "abortConnection"):
        return False
    transport.abortConnection()
    return True


async def close_websocket(send: Any, code: int, reason: str) -> None:
    """Close an accepted WebSocket with `code` and `reason`, both reaching the client."""
    protocol = daphne_protocol(send)
    if protocol is not None:
        state = protocol.state
        if state == protocol.STATE_OPEN:
            protocol.sendCloseFrame(code=int(code), reasonUtf8=encode_truncate(reason, CLOSE_REASON_MAX), isReply=False)
            return
        if state in (protocol.STATE_CLOSING, protocol.STATE_CLOSED):
            # A close is under way already. daphne's own path would hand autobahn's `sendClose`
            # a code it refuses from a server (1001, 1009 …) and log a task exception.
            return
    await send({"type": "websocket.close", "code": int(code), "reason": reason})


# ---------------------------------------------------------------------------------------------
# Direct writes under daphne (measured: bench/OPTIMISATIONS.md)
#
# Per frame, daphne's send path costs handle_reply → autobahn's sendMessage (framing in Python)
# → Twisted's transport.write, which never writes at once: it registers the socket for writing
# (epoll_ctl through the asyncio selector), writes on the next loop turn and unregisters it. In
# the fan-out profile that was 60 % of server time, on top of a writer-task wake-up per frame;
# writing here took 1,000-subscriber fan-out from 40 to 10 µs CPU per delivery. A WebSocket frame
# from the server is the same bytes for every subscriber (no mask), so it is built once per
# publish and written here straight to the socket while Twisted's own buffer is empty; what the
# socket does not take goes to Twisted's buffer as before, so order and backpressure (the probe
# above) are unchanged.


def ws_text_frame(payload: bytes) -> bytes:
    """A complete unmasked server→client text frame (RFC 6455 §5.2), FIN set, no extensions."""
    length = len(payload)
    if length < 126:
        return b"\x81" + bytes((length,)) + payload
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + payload
    return b"\x81\x7f" + length.to_bytes(8, "big") + payload


def http_chunk(data: bytes) -> bytes:
    """One chunk of a chunked HTTP/1.1 body (what Twisted's Request.write sends); an empty one
    would end the body, so nothing is sent for no data."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


def watch_messages(send: Any, hook: Callable[[bytes, bool], bool] | None) -> bool:
    """Have `hook(payload, is_binary)` see each message of the WebSocket behind `send` as it
    arrives, before daphne queues it for the application, which gets it only when the hook returns
    false (`server.WatchedWebSocketProtocol`); None removes the hook. False when it cannot be done
    here (another server): the application then sees every message, when it gets to it."""
    protocol = daphne_protocol(send)
    if protocol is None or not hasattr(type(protocol), "on_message"):
        return False
    protocol.on_message = hook
    return True


OPEN = WebSocketProtocol.STATE_OPEN


class DirectWriter:
    """Writes finished bytes (WebSocket frames, HTTP body chunks) to a daphne connection's socket."""

    __slots__ = ("_request", "_transport", "_websocket")

    def __init__(self, transport: Any, websocket: Any = None, request: Any = None) -> None:
        self._transport = transport
        self._websocket = websocket  # autobahn's protocol of a WebSocket: open while its state is OPEN
        self._request = request  # Twisted's request of an HTTP stream: open until finished or disconnected

    @classmethod
    def for_websocket(cls, send: Any) -> DirectWriter | None:
        """For an accepted WebSocket under daphne on plain TCP without extensions, else None."""
        protocol = daphne_protocol(send)
        transport = getattr(protocol, "transport", None)
        if not _plain_tcp(transport) or getattr(protocol, "_perMessageCompress", None) is not None:
            return None
        factory = getattr(protocol, "factory", None)
        if getattr(factory, "maskServerFrames", True) or getattr(protocol, "autoFragmentSize", 1):
            return None
        return cls(transport, websocket=protocol)

    @classmethod
    def for_http_stream(cls, send: Any) -> DirectWriter | None:
        """For a started chunked HTTP response under daphne on plain TCP (an SSE stream), else None."""
        request = daphne_protocol(send)
        channel = getattr(request, "channel", None)
        transport = getattr(channel, "transport", None)
        if not _plain_tcp(transport) or not getattr(request, "startedWriting", False) or not request.chunked:
            return None
        return cls(transport, request=request)

    def buffered(self) -> int:
        transport = self._transport
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    def writable(self) -> bool:
        """The connection is open on both the socket's and the protocol's side."""
        transport = self._transport
        if not transport.connected or transport.disconnecting:
            return False
        websocket = self._websocket
        if websocket is not None:
            return websocket.state == OPEN
        request = self._request
        return not (request.finished or request._disconnected)

    def write(self, data: bytes) -> None:
        """Send now what the socket takes; buffer the rest in Twisted (which sends it in order)."""
        self.offer(data, math.inf)

    def offer(self, data: bytes, high_water: float) -> bool:
        """`write(data)`, unless over `high_water` bytes wait in Twisted's buffer already: then
        False and nothing written (the caller queues it). Bytes for a closed connection are dropped.

        A publish comes through here once per subscriber: the checks are made in one call, and a
        WebSocket's open state is read here rather than through `writable`.
        """
        transport = self._transport
        pending, waiting = transport._tempDataLen, transport.dataBuffer
        if (pending or waiting) and len(waiting) - transport.offset + pending > high_water:
            return False
        websocket = self._websocket
        if websocket is not None:
            if websocket.state != OPEN or not transport.connected or transport.disconnecting:
                return True
        elif not self.writable():
            return True
        if pending or waiting:  # Twisted is still sending earlier bytes: behind them, in order
            transport.write(data)
            return True
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return True  # the connection is gone; Twisted notices on its next read
        if sent != len(data):
            transport.write(data[sent:])
        return True


def _plain_tcp(transport: Any) -> bool:
    return (
        transport is not None
        and not getattr(transport, "TLS", True)
        and hasattr(transport, "dataBuffer")
        and hasattr(transport, "_tempDataLen")
        and hasattr(transport, "socket")
    )
