"""`python -m realtime_project.server`: daphne's command line, with these changes.

* The access log is redacted: daphne prints each request's full URI, query string included, so a
  browser's `?token=` would otherwise land in the log.
* Shutdown is graceful: on SIGTERM/SIGINT every WebSocket is closed with 1001 and every SSE stream
  ends with `stream-error` `shutdown` (clients reconnect elsewhere), and this process's connection
  rows are closed — before daphne cancels what is left.
* Tuned for many connections (measured in bench/RESULTS.md): a listen queue of 4096 instead of
  Twisted's 50 for `-b`/`-p`, and the cyclic GC kept off the objects loaded at start-up.

Every daphne option is taken unchanged.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import Any


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    import django

    django.setup()
    from daphne import cli

    from streaming.logs import RedactingAccessLog
    from streaming.shutdown import GracefulServer

    cli.AccessLogGenerator = RedactingAccessLog
    cli.CommandLineInterface.server_class = GracefulServer
    cli.build_endpoint_description_strings = _with_backlog(cli.build_endpoint_description_strings)
    _tune_gc()
    cli.CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


LISTEN_BACKLOG = 4096


def _with_backlog(build: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """`-b`/`-p` endpoints with a listen queue of LISTEN_BACKLOG (the kernel caps it at somaxconn).

    Twisted's default is 50: in a 5,000-client reconnect storm the kernel dropped the excess SYNs
    and clients retried after 1, 3, 7 s (bench/RESULTS.md, "Connect").
    """

    def build_with_backlog(*args: Any, **kwargs: Any) -> list[str]:
        endpoints = build(*args, **kwargs)
        return [e + f":backlog={LISTEN_BACKLOG}" if e.startswith("tcp:") else e for e in endpoints]

    return build_with_backlog


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
