"""In-process cost of the application hooks on a publish and a subscribe (the `hooks` scenario).

Run as its own process (`python -m bench.hookcost`): Django set up with the project's settings,
one event loop, the server's own decision functions (`streaming.hooks.authorize_client_publish`,
`authorize_subscription`) called N times each without a hook, with a no-op async hook
(`bench.hooks.no_objection`) and with a no-op sync one (run on the hooks' threads). Prints one
JSON object: µs per call of each. Deterministic enough to compare before and after a change of
the hook path; the end-to-end cost is the `chat` scenario's `ours-daphne+hooks` row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time

CALLS = 100_000
SYNC_CALLS = 5_000


def no_objection_sync(context: object) -> None:
    return None


async def _measure(hooks, connection, calls: int) -> dict[str, float]:
    started = time.perf_counter()
    for _ in range(calls):
        await hooks.authorize_client_publish(connection, "chat-1", "text", {"n": 1})
    publish = (time.perf_counter() - started) / calls * 1e6
    started = time.perf_counter()
    for _ in range(calls):
        await hooks.authorize_subscription(connection, "chat-1")
    subscribe = (time.perf_counter() - started) / calls * 1e6
    return {"publish_us": round(publish, 2), "subscribe_us": round(subscribe, 2)}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "true")
    import django

    django.setup()
    from django.conf import settings

    from streaming import hooks
    from streaming.auth import ANONYMOUS

    class Connection:  # what the hooks read of a connection
        identity, connection_id, transport, ip, info = ANONYMOUS, "c", "ws", "127.0.0.1", None

        def hook_context(self, event, **fields):
            return hooks.HookContext(event, self.identity, self.connection_id, self.transport, self.ip, **fields)

    base = settings.REALTIME
    results = {}
    for case, path, calls in (
        ("none", "", CALLS),
        ("async no-op", "bench.hooks.no_objection", CALLS),
        ("sync no-op", "bench.hookcost.no_objection_sync", SYNC_CALLS),
    ):
        settings.REALTIME = dataclasses.replace(base, realtime_subscribe_hook=path, realtime_publish_hook=path)
        results[case] = asyncio.run(_measure(hooks, Connection(), calls))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
