"""`python -m realtime_project.server`: daphne's command line, with these changes.

* The access log is redacted: daphne prints each request's full URI, query string included, so a
  browser's `?token=` would otherwise land in the log.
* Shutdown is graceful: on SIGTERM/SIGINT every WebSocket is closed with 1001 and every SSE stream
  ends with `stream-error` `shutdown` (clients reconnect elsewhere), and this process's connection
  rows are closed — before daphne cancels what is left.
* Tuned for many connections (measured in bench/RESULTS.md): a listen queue of 4096 instead of
  Twisted's 50 for `-b`/`-p`, the cyclic GC kept off the objects loaded at start-up, and no
  pretty-printing of autobahn's configuration for a debug line nobody reads on every handshake.
* Memory stays flat: glibc's malloc gets at most two arenas (`MALLOC_ARENA_MAX`, unless set).

Every daphne option is taken unchanged.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from collections.abc import Callable
from pprint import pformat
from typing import Any


def main(argv: list[str] | None = None) -> None:
    _limit_malloc_arenas()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    import django

    django.setup()
    from daphne import cli

    from streaming.logs import RedactingAccessLog
    from streaming.shutdown import GracefulServer

    cli.AccessLogGenerator = RedactingAccessLog
    cli.CommandLineInterface.server_class = GracefulServer
    cli.build_endpoint_description_strings = _with_backlog(cli.build_endpoint_description_strings)
    _defer_autobahn_debug_formatting()
    _tune_gc()
    cli.CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


LISTEN_BACKLOG = 4096
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc at MALLOC_ARENAS arenas, as `MALLOC_ARENA_MAX=2` would.

    Django runs each HTTP request's sync code on a thread of its own, and glibc gives new threads
    new arenas (up to 8 per core) whose freed memory stays resident: RSS rose in steps of about
    400 KB as load peaks met new arenas, over ten minutes of steady load (tests/reliability/
    test_resources.py, the soak). The threads only run short database calls, so sharing one
    arena costs nothing measurable. An explicit `MALLOC_ARENA_MAX` in the environment wins; on a
    libc without `mallopt` (musl) nothing changes.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def _with_backlog(build: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """`-b`/`-p` endpoints with a listen queue of LISTEN_BACKLOG (the kernel caps it at somaxconn).

    Twisted's default is 50: in a 5,000-client reconnect storm the kernel dropped the excess SYNs
    and clients retried after 1, 3, 7 s (bench/RESULTS.md, "Connect").
    """

    def build_with_backlog(*args: Any, **kwargs: Any) -> list[str]:
        endpoints = build(*args, **kwargs)
        return [e + f":backlog={LISTEN_BACKLOG}" if e.startswith("tcp:") else e for e in endpoints]

    return build_with_backlog


class _DeferredPformat:
    """`pprint.pformat(value)`, computed only when the log line holding it is written."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        return format(pformat(self.value), spec)

    def __str__(self) -> str:
        return pformat(self.value)


def _defer_autobahn_debug_formatting() -> None:
    """autobahn pretty-prints its 29 configuration attributes for a debug log line on every new
    connection (`WebSocketProtocol._connectionMade`), whether debug logging is on or not: about
    180 µs of each handshake's CPU (bench/OPTIMISATIONS.md). The line is now formatted only if
    it is emitted. `Timings.__str__`, the module's other `pformat` caller, keeps the real one.
    """
    from autobahn.websocket import protocol

    protocol.pformat = _DeferredPformat
    protocol.Timings.__str__ = lambda timings: pformat(timings._timings)


def _tune_gc() -> None:
    """Move everything loaded at start-up out of the cyclic GC's sight (`gc.freeze`), so that full
    collections scan only what connections allocate.

    Raising the collection thresholds as well (50,000 / 20 / 100) removed the GC pauses from the
    10,000-subscriber fan-out, but then the cycles of closed connections were collected so rarely
    that RSS grew by 100+ MB over 16,000 connects (bench/OPTIMISATIONS.md): the thresholds stay at
    Python's defaults.
    """
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main()
