"""daphne's server as this product runs it: a graceful SIGTERM, the runtime started before it
listens, WebSocket message limits, request bodies refused before they are read, and a reaping loop
that allocates nothing per connection."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any
from urllib.parse import unquote

from daphne.http_protocol import WebRequest
from daphne.server import Server
from django.conf import settings
from twisted.internet import defer

from streaming.daphne_adapter import active
from streaming.middleware import http_body_limit, too_large_body
from streaming.protocol import CloseCode
from streaming.runtime import _runtimes, warm_up

logger = logging.getLogger(__name__)

GRACE_SECONDS = 3.0


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


class GracefulServer(Server):
    """daphne's server, closing connections with 1001 before its applications are cancelled,
    and with this process's runtime started before it listens.

    It also fails a WebSocket with a closing handshake — 1009 for a message over
    WEBSOCKET_MAX_MESSAGE_SIZE, 1002/1007 for protocol errors — where daphne's factory would
    drop the TCP connection (autobahn's `failByDrop` default), so clients see why.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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

    def application_checker(self):
        """daphne's once-a-second reaping of finished applications, without its garbage.

        Upstream: daphne iterating `list(self.connections)` would remove this fork.

        daphne iterates `list(self.connections.items())`: a new tuple per connection every second,
        which at 10,000 connections sets off young collections that promote into full ones over
        every connection's objects — a pause of up to a second (bench/OPTIMISATIONS.md). Iterating
        the keys allocates one list instead. Otherwise the same as daphne 4.2's.
        """
        if not active():
            return super().application_checker()
        connections = self.connections
        for protocol in list(connections):
            details = connections.get(protocol)
            if details is None:
                continue
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
                del connections[protocol]
        from twisted.internet import reactor  # daphne's (asyncio) reactor, installed by now

        reactor.callLater(1, self.application_checker)

    def kill_all_applications(self):
        """Called by the reactor's "before shutdown" trigger."""
        done = defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_runtimes()))
        done.addBoth(lambda _: super(GracefulServer, self).kill_all_applications())
        return done
