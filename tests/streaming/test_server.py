"""The daphne server subclass (streaming/shutdown.py): reaping finished applications."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

from twisted.internet import reactor

from streaming.shutdown import GracefulServer


class Protocol:
    def __init__(self) -> None:
        self.handled: list[BaseException] = []

    def handle_exception(self, exception: BaseException) -> None:
        self.handled.append(exception)


def checker_server(connections: dict) -> GracefulServer:
    server = GracefulServer.__new__(GracefulServer)  # no sockets: only the checker's state
    server.connections = connections
    server.application_close_timeout = 10
    return server


async def test_application_checker_reaps_like_daphne(monkeypatch):
    monkeypatch.setattr(reactor, "callLater", lambda delay, function: None)
    loop = asyncio.get_running_loop()
    running, done, failed, stuck = (loop.create_future() for _ in range(4))
    done.set_result(None)
    failed.set_exception(RuntimeError("boom"))
    live, closed, crashed, hung, gone = (Protocol() for _ in range(5))
    connections = {
        live: {"application_instance": running},  # open, app running: kept as is
        closed: {"application_instance": done, "disconnected": time.time()},  # both done: removed
        crashed: {"application_instance": failed},  # app failed on an open connection: told, kept
        hung: {"application_instance": stuck, "disconnected": time.time() - 60},  # too slow: cancelled, removed
        gone: {"disconnected": time.time()},  # nothing left: removed
    }
    checker_server(connections).application_checker()
    assert set(connections) == {live, crashed}
    assert connections[live] == {"application_instance": running}
    assert "application_instance" not in connections[crashed]
    assert [str(e) for e in crashed.handled] == ["boom"]
    assert stuck.cancelled()


async def test_application_checker_allocates_no_tuple_per_connection(monkeypatch):
    """The point of the override: daphne's `list(connections.items())` made a tuple per connection
    every second (a full garbage collection over all of them every so often)."""
    count = 10_000
    monkeypatch.setattr(reactor, "callLater", lambda delay, function: None)
    future = asyncio.get_running_loop().create_future()
    server = checker_server({Protocol(): {"application_instance": future} for _ in range(count)})
    tracemalloc.start()
    try:
        server.application_checker()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < count * 8 + 64 * 1024  # one list of keys, not `count` tuples of 56 bytes each
