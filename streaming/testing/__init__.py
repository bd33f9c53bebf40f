"""A test kit for applications built on the product (docs/testing.md).

Enable the pytest plugin in the top-level conftest.py::

    pytest_plugins = ["streaming.testing"]

Fixtures:

* `realtime_published` — a `PublishRecorder` of every message delivered through the publish path
  (`assert_published(channel=…, type=…, content=…)`, `assert_not_published`, `wait_for`, …);
* `realtime_client` — in-process WebSocket clients (`RealtimeTestClient`) of the ASGI application,
  `realtime_asgi_app` (settings.ASGI_APPLICATION; override it for another);
* `realtime_live_server` — a real daphne process on the test database (`RealtimeLiveServer`),
  configured by `realtime_live_server_env`.

The classes and helpers work without pytest too: `record_published()`, `RealtimeTestClient`,
`make_token`, `RealtimeLiveServer`.
"""

from streaming.testing.client import ConnectionClosed, RealtimeTestClient, ReplyError, make_token
from streaming.testing.plugin import (
    pytest_runtest_makereport,
    realtime_asgi_app,
    realtime_client,
    realtime_live_server,
    realtime_live_server_env,
    realtime_published,
    stop_runtime,
)
from streaming.testing.recorder import PublishedMessage, PublishRecorder, record_published
from streaming.testing.server import RealtimeLiveServer, SharedDatabaseError

__all__ = [
    "ConnectionClosed",
    "PublishRecorder",
    "PublishedMessage",
    "RealtimeLiveServer",
    "RealtimeTestClient",
    "ReplyError",
    "SharedDatabaseError",
    "make_token",
    "pytest_runtest_makereport",
    "realtime_asgi_app",
    "realtime_client",
    "realtime_live_server",
    "realtime_live_server_env",
    "realtime_published",
    "record_published",
    "stop_runtime",
]
