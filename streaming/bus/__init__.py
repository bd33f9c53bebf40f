"""The bus: how a publish reaches the hub of every server process with subscribers of its channel.

Publishers (`streaming.services`, from any thread or event loop) call `publish` / `apublish`; a
process's hub (`streaming.hub`) attaches to the bus, subscribes to the channels it has local
subscribers of, and receives each publish once, whatever the number of its subscribers.

* Without REDIS_URL the bus is `LocalBus`: the hubs of this process, in a table channel → hubs.
  A publish is a dictionary lookup and a call (on the hub's own loop, or handed to it from
  another thread): O(1) in the number of channels, no task, no copy, no encoding.
* With REDIS_URL it is `RedisBus`: one `PUBLISH` per publish and one pub/sub connection per
  process and Redis server; channels are sharded over several comma-separated URLs.

Besides publishes, the bus carries commands to one process (`send`, and `request` for an answer),
addressed by the `address` its hub got when it attached.
"""

from __future__ import annotations

from django.conf import settings

from streaming.bus.local import LocalBus
from streaming.bus.redis import RedisBus

__all__ = ["LocalBus", "RedisBus", "get_bus"]


_chosen: tuple[object, LocalBus | RedisBus | None] = (None, None)


def get_bus() -> LocalBus | RedisBus:
    """The bus of this process (RedisBus when REDIS_URL is set); chosen once per configuration."""
    global _chosen
    config = settings.REALTIME
    chosen_for, bus = _chosen
    if chosen_for is config and bus is not None and (isinstance(bus, RedisBus) or bus is LocalBus._instance):
        return bus
    urls = config.redis_urls
    bus = RedisBus.for_urls(urls) if urls else LocalBus.instance()
    _chosen = (config, bus)
    return bus
