"""daphne's command line as `python -m realtime_project.server` runs it.

* The access log is redacted: daphne prints each request's full URI, query string included, so a
  browser's `?token=` would otherwise land in the log.
* The server is `GracefulServer` (see `server.py`).
* `-b`/`-p` listen with a queue of LISTEN_BACKLOG, through daphne's public endpoint strings.
* autobahn's per-handshake debug line is formatted only when it is written, and its per-read
  debug line only built when debug logging is on.

Every daphne option is taken unchanged.
"""

from __future__ import annotations

import argparse
from pprint import pformat
from typing import Any

from streaming.daphne_adapter import active

LISTEN_BACKLOG = 4096
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


def run(argv: list[str]) -> None:
    """Run daphne's CLI with the product's server, access log and listen queue."""
    from daphne import cli

    from streaming.daphne_adapter.server import GracefulServer
    from streaming.logs import RedactingAccessLog

    cli.CommandLineInterface.server_class = GracefulServer  # daphne's documented extension point
    cli.AccessLogGenerator = RedactingAccessLog  # Upstream: an access-log class option in daphne's CLI
    if active():
        defer_autobahn_debug_formatting()
        skip_autobahn_receive_debug_line()
    cli.CommandLineInterface().run(with_listen_backlog(argv))


def with_listen_backlog(argv: list[str]) -> list[str]:
    """`-b HOST -p PORT` as the endpoint `tcp:port=PORT:interface=HOST:backlog=LISTEN_BACKLOG`.

    Twisted's default queue is 50: in a 5,000-client reconnect storm the kernel dropped the excess
    SYNs and clients retried after 1, 3, 7 s (bench/OPTIMISATIONS.md). Explicit endpoints (`-e`,
    `-u`, `--fd`) are left as given.
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-b", "--bind", dest="host")
    parser.add_argument("-p", "--port", type=int)
    parser.add_argument("-e", "--endpoint", action="append")
    parser.add_argument("-u", "--unix-socket")
    parser.add_argument("--fd", dest="file_descriptor")
    known, rest = parser.parse_known_args(argv)
    if known.endpoint or known.unix_socket or known.file_descriptor is not None or "-h" in rest or "--help" in rest:
        return argv
    host = (known.host or DEFAULT_HOST).strip("[]").replace(":", r"\:")
    port = known.port if known.port is not None else DEFAULT_PORT
    return ["-e", f"tcp:port={port}:interface={host}:backlog={LISTEN_BACKLOG}", *rest]


class _DeferredPformat:
    """`pprint.pformat(value)`, computed only when the log line holding it is written."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        return format(pformat(self.value), spec)

    def __str__(self) -> str:
        return pformat(self.value)


def defer_autobahn_debug_formatting() -> None:
    """autobahn pretty-prints its 29 configuration attributes for a debug log line on every new
    connection (`WebSocketProtocol._connectionMade`), whether debug logging is on or not: about
    180 µs of each handshake's CPU (bench/OPTIMISATIONS.md). The line is now formatted only if
    it is emitted. `Timings.__str__`, the module's other `pformat` caller, keeps the real one.
    Upstream: autobahn formatting lazily (`log.debug("{config}", config=...)`) would remove this.
    """
    from autobahn.websocket import protocol

    protocol.pformat = _DeferredPformat
    protocol.Timings.__str__ = lambda timings: pformat(timings._timings)


def skip_autobahn_receive_debug_line() -> None:
    """autobahn's `dataReceived` builds the arguments of a debug line for every read from a
    client — three `click.style` highlights, 12 µs — before a logger that is off drops it: a
    sixth of the server's CPU for 10,000 idle WebSockets answering heartbeats, a few per cent of
    a chat publish (bench/OPTIMISATIONS.md). The line is now built only when autobahn's log level
    is debug or trace. Upstream: autobahn highlighting lazily would remove this.
    """
    import txaio
    from autobahn.twisted import websocket

    adapter = websocket.WebSocketAdapterProtocol
    if getattr(adapter.dataReceived, "skips_debug_line", False):
        return
    with_debug_line = adapter.dataReceived

    def data_received(self: Any, data: bytes) -> None:
        if txaio.get_global_log_level() in ("debug", "trace"):
            with_debug_line(self, data)
        else:
            self._dataReceived(data)

    data_received.skips_debug_line = True
    adapter.dataReceived = data_received
