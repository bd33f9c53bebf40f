"""Graceful shutdown under daphne: say goodbye to every connection before the reactor stops."""

from __future__ import annotations

import asyncio
import logging

from daphne.server import Server
from twisted.internet import defer

from streaming.protocol import CloseCode
from streaming.runtime import _runtimes

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
    """daphne's server, closing connections with 1001 before its applications are cancelled.

    It also fails a WebSocket with a closing handshake — 1009 for a message over
    `--websocket_max_message_size`, 1002/1007 for protocol errors — where daphne's factory would
    drop the TCP connection (autobahn's `failByDrop` default), so clients see why.
    """

    @property
    def ws_factory(self):
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory):
        factory.setProtocolOptions(failByDrop=False)
        self._ws_factory = factory

    def kill_all_applications(self):
        """Called by the reactor's "before shutdown" trigger."""
        done = defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_runtimes()))
        done.addBoth(lambda _: super(GracefulServer, self).kill_all_applications())
        return done
