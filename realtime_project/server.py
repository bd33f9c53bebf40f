"""`python -m realtime_project.server`: daphne's command line, with a redacting access log.

daphne's access log prints each request's full URI, query string included, so a browser's
`?token=` would land in the log. This entry point swaps in `RedactingAccessLog` and otherwise
takes every daphne option unchanged.
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

    cli.AccessLogGenerator = RedactingAccessLog
    cli.CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
