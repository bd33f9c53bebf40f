"""Graceful shutdown under daphne: say goodbye to every connection before the reactor stops."""

from __future__ import annotations

import asyncio
import logging
import time

from daphne.server import Server
from twisted.internet import defer

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


class GracefulServer(Server):
    """daphne's server, closing connections with 1001 before its applications are cancelled,
    and with this process's runtime started before it listens.

    It also fails a WebSocket with a closing handshake — 1009 for a message over
    `--websocket_max_message_size`, 1002/1007 for protocol errors — where daphne's factory would
    drop the TCP connection (autobahn's `failByDrop` default), so clients see why.
    """

    def run(self):
        """Start the runtime (bus channel, registry) on daphne's loop, then listen and serve."""
        from daphne.server import twisted_loop  # the loop the reactor and the applications run on

        twisted_loop.run_until_complete(warm_up())
        super().run()

    @property
    def ws_factory(self):
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory):
        factory.setProtocolOptions(failByDrop=False)
        self._ws_factory = factory

    def application_checker(self):
        """daphne's once-a-second reaping of finished applications, without its garbage.

        daphne iterates `list(self.connections.items())`: a new tuple per connection every second,
        which at 10,000 connections sets off young collections that promote into full ones over
        every connection's objects — a pause of up to a second (bench/OPTIMISATIONS.md). Iterating
        the keys allocates one list instead. Otherwise the same as daphne 4.2's.
        """
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
