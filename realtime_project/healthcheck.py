"""`python -m realtime_project.healthcheck`: the container image's HEALTHCHECK.

Asks the server in this container for `/healthz` (database and bus) and exits 0 on 200, 1 on
anything else. Django answers a Host it does not allow with 400, and production's
DJANGO_ALLOWED_HOSTS need not name 127.0.0.1: the request carries a host the server allows, the
first of DJANGO_ALLOWED_HOSTS. Django is not loaded, so a check costs a few milliseconds.

The server's port is the image's `PORT` (8000 by default), the one its command listens on.
"""

from __future__ import annotations

import http.client
import os
import sys

from realtime_project.env import ConfigError, load_config


def host_header(allowed_hosts: tuple[str, ...]) -> str:
    """A Host value that the first ALLOWED_HOSTS entry accepts."""
    for pattern in allowed_hosts:
        if pattern == "*":
            return "localhost"
        if pattern.startswith("."):  # `.example.com` allows example.com and its subdomains
            return pattern[1:]
        if pattern:
            return pattern
    return "localhost"


def main() -> int:
    try:
        hosts = load_config().django_allowed_hosts
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 1
    port = int(os.environ.get("PORT") or 8000)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz", headers={"Host": host_header(hosts)})
        response = connection.getresponse()
        body = response.read(512).decode(errors="replace")
    except OSError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    if response.status != 200:
        print(f"unhealthy: {response.status} {body}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
