"""daphne's server as this product runs it: a graceful SIGTERM, the runtime started before it
listens, WebSocket message limits, request bodies refused before they are read, and a reaping loop
that allocates nothing per connection."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from typing import Any
from urllib.parse import unquote

from autobahn.websocket.protocol import WebSocketProtocol
from daphne.http_protocol import WebRequest
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol as DaphneWebSocketProtocol
from django.conf import settings
from twisted.internet import defer

from streaming.daphne_adapter import active
from streaming.middleware import http_body_limit, too_large_body
from streaming.protocol import CloseCode
from streaming.runtime import _runtimes, warm_up

logger = logging.getLogger(__name__)

GRACE_SECONDS = 3.0
FULL_TIMEOUT_CHECK_SECONDS = 60.0
CLOSING_UPLOAD_SECONDS = 10.0  # how long a client still sending may take to reach our close frame


async def shutdown_runtimes(grace: float = GRACE_SECONDS) -> None:
    """Close every local connection with 1001 and record the process as stopped."""
    for runtime in list(_runtimes.values()):
        try:
            await asyncio.wait_for(runtime.registry.shutdown(CloseCode.GOING_AWAY, "server shutting down"), grace)
        except Exception:
            logger.exception("graceful shutdown did not finish")


class BoundedWebRequest(WebRequest):
    """daphne's request, answering 413 as soon as a body shows it is over the limit.

    Twisted reads a whole body (to memory, past 100 KB to a temporary file) before daphne hands
    the request over: a 300 MB POST was spooled to disk before its 413. Here a `Content-Length`
    over the limit is refused before any of the body is read, and a chunked body as soon as it
    passes the limit; nothing over the limit is stored. Upstream: daphne has no body limit.
    """

    _refused = False
    _body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        """Called by Twisted once the headers are in, with the declared body length (None: chunked)."""
        if length is not None and length > self._body_limit():
            self.requestHeaders.removeHeader(b"expect")  # no `100 Continue` after the refusal
            self._refuse_body()
        super().gotLength(0 if self._refused else length)

    def handleContentChunk(self, data: bytes) -> None:
        """Called by Twisted for each piece of the body as it arrives."""
        if self._refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self._body_limit():
            self._refuse_body()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Called by Twisted when the request is complete; a refused one goes no further."""
        if not self._refused:
            super().requestReceived(command, path, version)

    def _body_limit(self) -> int:
        path = self.channel._path.split(b"?", 1)[0].decode("latin-1")  # the request line is in, the body not
        return http_body_limit(unquote(path))

    def _refuse_body(self) -> None:
        self._refused = True
        limit = self._body_limit()
        body = too_large_body(limit)
        head = (
            b"HTTP/1.1 413 Content Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        transport = self.channel.transport
        transport.write(head + body)
        transport.loseConnection()
        logger.info("refuse http body over %d bytes", limit)


class WatchedWebSocketProtocol(DaphneWebSocketProtocol):
    """daphne's WebSocket protocol, with a hook that sees each client message as it arrives.

    An accepted connection sets `on_message` (`io.watch_messages`): a message is the client's sign
    of life when it arrives, not when the application gets to it — a connection busy with a slow
    action (a database outage) would otherwise miss its client's heartbeat answers and close a live
    client as idle — and a heartbeat answer ends there, without a trip through the application
    queue (the commonest frame of an idle connection). Upstream: ASGI has no such event.

    Once our close frame is sent (a kick, a 4429, a refused message), the client's messages are
    read and dropped: daphne would still hand them to the application, which would act on a
    publish in flight from a client it has just closed.
    """

    on_message: Any = None  # (payload, is_binary) -> True when it consumed the message
    heard_while_closing = False  # bytes came after our close frame, since the last look
    closing_deadline = 0.0  # monotonic time after which a still-sending client is dropped

    def onCloseHandshakeTimeout(self) -> None:
        """autobahn drops the TCP connection when a client has not answered our close frame within
        a second (its `closeHandshakeTimeout`). A client still sending — a message over
        WEBSOCKET_MAX_MESSAGE_SIZE refused at its first bytes, uploading over a slow link — has
        not read that frame yet: most client libraries finish writing a message before they read.
        Dropping it then resets the connection under its upload and the close frame with its code
        (1009) is lost. So while the client is inside a frame or bytes keep coming (read since the
        last look, or waiting in the socket), it gets another second, up to CLOSING_UPLOAD_SECONDS
        in all; autobahn keeps reading meanwhile and ends the connection when the client's close
        frame comes. A silent client between frames is dropped after the second, as autobahn does.
        Upstream: autobahn telling a slow peer from a silent one would remove this."""
        now = time.monotonic()
        if not self.closing_deadline:
            self.closing_deadline = now + CLOSING_UPLOAD_SECONDS
        if self.state == self.STATE_CLOSING and now < self.closing_deadline and self._client_still_sending():
            self.heard_while_closing = False
            self.closeHandshakeTimeoutCall = self.factory._batched_timer.call_later(
                self.closeHandshakeTimeout, self.onCloseHandshakeTimeout
            )
            return
        super().onCloseHandshakeTimeout()

    def _client_still_sending(self) -> bool:
        if self.heard_while_closing or self.current_frame is not None:
            return True
        sock = getattr(self.transport, "socket", None)
        if sock is None:
            return False
        try:
            return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # nothing waiting (EAGAIN), or the connection is gone
            return False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != OPEN:
            return  # after our close frame (a kick, a 4429, a refusal): read, never acted on
        hook = self.on_message
        if hook is not None and not self.muted and hook(payload, isBinary):
            return
        super().onMessage(payload, isBinary)

    def dataReceived(self, data: bytes) -> None:
        """Whole small text frames read at once (`complete_text_frames`), the rest by autobahn."""
        if (
            self.state == OPEN
            and not self.data
            and self.current_frame is None
            and not self.inside_message
            and self._perMessageCompress is None
            and self._listeners is None
            and self.autoPingTimeoutCall is None
            and self.applyMask
            and not (self.logOctets or self.logFrames or self.trackedTimings)
        ):
            taken = complete_text_frames(self, data)
            if taken == len(data):
                return
            if taken:
                data = data[taken:]
                if self.state != OPEN:  # autobahn counts a whole read that found it open
                    self.trafficStats.incomingOctetsWireLevel += len(data)
        elif self.state == CLOSING:
            self.heard_while_closing = True  # see onCloseHandshakeTimeout
        super().dataReceived(data)


OPEN = WebSocketProtocol.STATE_OPEN
CLOSING = WebSocketProtocol.STATE_CLOSING


def complete_text_frames(protocol: WatchedWebSocketProtocol, data: bytes) -> int:
    """Hand `protocol` the whole masked text frames at the start of `data`; the bytes taken.

    A client's frame — a heartbeat answer, an action — nearly always arrives whole in one read, a
    single unfragmented text frame of under 64 KiB. autobahn reads it through a state machine that
    costs 10-13 µs a frame (a buffer, a frame object, a masker, a UTF-8 validator, an event future
    per message): a third of the CPU of 10,000 idle WebSockets answering heartbeats
    (bench/OPTIMISATIONS.md). Such a frame is read here in 2 µs and handed to the same
    `_onMessage` autobahn would call. Anything else — a partial frame, a fragment, a control frame,
    reserved bits, an unmasked frame, a payload over the limits, invalid UTF-8 — stops here at its
    first byte and autobahn reads it from there, with its own checks, errors and close codes.
    The caller has checked that autobahn is between frames with nothing buffered and no extension,
    logging, timing or listener that would see frames.
    Upstream: autobahn reading whole frames in one step would remove this.
    """
    size = len(data)
    position = 0
    frame_limit = protocol.maxFramePayloadSize
    message_limit = protocol.maxMessagePayloadSize
    stats = protocol.trafficStats
    while size - position >= 6 and data[position] == 0x81:  # FIN, no RSV bits, text
        length = data[position + 1] ^ 0x80  # the mask bit must be set: unmasked frames exceed 127
        if length < 126:
            start = position + 6
        elif length == 126 and size - position >= 8:
            length = (data[position + 2] << 8) | data[position + 3]
            if length < 126:
                break  # not the minimal encoding: autobahn's protocol error
            start = position + 8
        else:
            break  # 64-bit lengths, unmasked frames, a header cut short
        end = start + length
        if end > size or 0 < frame_limit < length or 0 < message_limit < length:
            break
        keys = int.from_bytes((data[start - 4 : start] * ((length >> 2) + 1))[:length], "little")
        payload = (int.from_bytes(data[start:end], "little") ^ keys).to_bytes(length, "little")
        try:
            payload.decode()
        except UnicodeDecodeError:
            break
        stats.incomingOctetsWireLevel += end - position
        stats.incomingOctetsWebSocketLevel += length
        stats.incomingOctetsAppLevel += length
        stats.incomingWebSocketFrames += 1
        stats.incomingWebSocketMessages += 1
        position = end
        protocol._onMessage(payload, False)
        if protocol.state != OPEN:
            break  # the application closed it: autobahn reads whatever follows in its state
    return position


class GracefulServer(Server):
    """daphne's server, closing connections with 1001 before its applications are cancelled,
    and with this process's runtime started before it listens.

    It also fails a WebSocket with a closing handshake — 1009 for a message over
    WEBSOCKET_MAX_MESSAGE_SIZE, 1002/1007 for protocol errors — where daphne's factory would
    drop the TCP connection (autobahn's `failByDrop` default), so clients see why.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._due: set = set()  # connections to look at in the next reaping round
        self._unsettled: set = set()  # HTTP requests and WebSocket handshakes: timed every round
        self._next_full_timeout_check = 0.0
        # autobahn buffers a message up to these limits before the application sees it: the
        # product's own limit, not daphne's 1 MiB (100 stalled partial messages held ~100 MB).
        limit = settings.REALTIME.websocket_max_message_size
        self.websocket_max_message_size = self.websocket_max_frame_size = limit
        # The product's heartbeat (WEBSOCKET_HEARTBEAT_INTERVAL, answered by clients) and idle
        # close (WEBSOCKET_DISCONNECT_TIMEOUT) keep connections alive and find dead ones; daphne's
        # protocol pings on top of them cost a ping and a pong per connection every 20 s.
        self.ping_interval = math.inf

    def run(self):
        """Start the runtime (bus channel, registry) on daphne's loop, then listen and serve."""
        if active():
            from daphne.server import twisted_loop  # the loop the reactor and the applications run on

            twisted_loop.run_until_complete(warm_up())
        super().run()

    @property
    def ws_factory(self):
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory):
        # A close handshake (1009, 1002, 1007) where autobahn would drop the TCP connection, so
        # clients see why. Upstream: daphne would need to pass failByDrop=False itself.
        factory.setProtocolOptions(failByDrop=False)
        if active():
            factory.protocol = WatchedWebSocketProtocol
        self._ws_factory = factory

    @property
    def http_factory(self):
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory):
        if active():
            build = factory.buildProtocol

            def build_bounded(address: Any) -> Any:
                channel = build(address)
                channel.requestFactory = BoundedWebRequest
                return channel

            factory.buildProtocol = build_bounded
        self._http_factory = factory

    def create_application(self, protocol, scope):
        """daphne's, then: when the application ends, its connection is due for reaping."""
        queue = super().create_application(protocol, scope)
        details = self.connections.get(protocol)
        if details is not None and "application_instance" in details:
            details["application_instance"].add_done_callback(lambda _: self._due.add(protocol))
        return queue

    def protocol_connected(self, protocol):
        """daphne's, then: a new connection is timed every round until it is an open WebSocket."""
        super().protocol_connected(protocol)
        self._unsettled.add(protocol)

    def protocol_disconnected(self, protocol):
        """daphne's, then: a disconnected connection is due for reaping."""
        super().protocol_disconnected(protocol)
        self._due.add(protocol)

    def application_checker(self):
        """daphne's once-a-second reaping of finished applications, for the connections that can
        need it: those whose application ended or whose client left since the last round, and
        those still closing. daphne looks at every connection every second (10,000 dict lookups a
        second for nothing, on an idle process) and allocates a tuple per connection doing it
        (young collections that promoted into full ones: pauses of up to a second,
        bench/OPTIMISATIONS.md). What it does to each connection is daphne 4.2's.
        Upstream: daphne reaping on the events (an application done, a client gone) would remove this.
        """
        if not active():
            return super().application_checker()
        due, self._due = self._due, set()
        for protocol in due:
            if self._reap(protocol):
                self._due.add(protocol)  # still closing: look again next round
        from twisted.internet import reactor  # daphne's (asyncio) reactor, installed by now

        reactor.callLater(1, self.application_checker)

    def _reap(self, protocol) -> bool:
        """daphne 4.2's handling of one connection; True while it must be looked at again."""
        details = self.connections.get(protocol)
        if details is None:
            return False
        disconnected = details.get("disconnected", None)
        application_instance = details.get("application_instance", None)
        overdue = disconnected and time.time() - disconnected > self.application_close_timeout
        if overdue and application_instance and not application_instance.done():
            logger.warning(
                "Application instance %r for connection %s took too long to shut down and was killed.",
                application_instance,
                repr(protocol),
            )
            application_instance.cancel()
        if application_instance and application_instance.done():
            try:
                exception = application_instance.exception()
            except asyncio.CancelledError:
                pass
            else:
                if exception:
                    if isinstance(exception, KeyboardInterrupt):
                        self.stop()
                    else:
                        logger.error("Exception inside application: %s", exception, exc_info=exception)
                        if not disconnected:
                            protocol.handle_exception(exception)
            del details["application_instance"]
            application_instance = None
        if not application_instance and disconnected:
            del self.connections[protocol]
            return False
        return bool(disconnected)  # gone, its application still ending

    def timeout_checker(self):
        """daphne's timeout round every 2 s, for the connections whose timeouts can strike now:
        HTTP requests and WebSocket handshakes (kept in a set from their start until they are open
        WebSockets or gone). An open WebSocket only has daphne's day-long `--websocket_timeout`
        (pings are off: see __init__), checked once a minute with everything else. daphne walks
        every connection every 2 s: at 10,000 idle WebSockets that walk was an eighth of the
        process's CPU (bench/OPTIMISATIONS.md).
        Upstream: daphne skipping open WebSockets when pings are off would remove this.
        """
        if not active():
            return super().timeout_checker()
        now = time.time()
        if now >= self._next_full_timeout_check:
            self._next_full_timeout_check = now + FULL_TIMEOUT_CHECK_SECONDS
            for protocol in list(self.connections):
                protocol.check_timeouts()
        else:
            open_state, connections = WebSocketProtocol.STATE_OPEN, self.connections
            for protocol in list(self._unsettled):
                if protocol not in connections or getattr(protocol, "state", None) == open_state:
                    self._unsettled.discard(protocol)  # gone, or an open WebSocket from now on
                else:
                    protocol.check_timeouts()
        from twisted.internet import reactor

        reactor.callLater(2, self.timeout_checker)

    def kill_all_applications(self):
        """Called by the reactor's "before shutdown" trigger."""
        done = defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_runtimes()))
        done.addBoth(lambda _: super(GracefulServer, self).kill_all_applications())
        return done
