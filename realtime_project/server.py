"""`python -m realtime_project.server`: daphne's command line, with two changes.

* The access log is redacted: daphne prints each request's full URI, query string included, so a
  browser's `?token=` would otherwise land in the log.
* Shutdown is graceful: on SIGTERM/SIGINT every WebSocket is closed with 1001 and every SSE stream
  ends with `stream-error` `shutdown` (clients reconnect elsewhere), and this process's connection
  rows are closed — before daphne cancels what is left.

Every daphne option is taken unchanged.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    import django

    django.setup()
    from daphne import cli

    from streaming.logs import RedactingAccessLog
    from streaming.shutdown import GracefulServer

    cli.AccessLogGenerator = RedactingAccessLog
    cli.CommandLineInterface.server_class = GracefulServer
    cli.CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
