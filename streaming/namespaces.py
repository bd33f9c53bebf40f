"""Per-channel options: the first CHANNEL_NAMESPACES pattern a channel matches, over the global
settings (README, "Channel namespaces").

`options(channel)` is on the publish and subscribe paths: with no namespace configured it is one
attribute read; with some, the answer for a channel is remembered (at most OPTIONS_CACHE_MAX
channels, forgotten all at once when full or when the settings change).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from django.conf import settings

from streaming import protocol

OPTIONS_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """What a channel does: history kept, presence, join/leave events, who may publish and subscribe."""

    history_size: int  # messages kept (CHANNEL_HISTORY_SIZE)
    history_ttl: int  # seconds a message is kept (CHANNEL_HISTORY_TTL)
    presence: bool  # member lists answered (counts always are)
    join_leave: bool  # join/leave events published to the channel (default: presence-* channels)
    client_publish: bool  # WebSocket clients may publish (CLIENT_PUBLISH_ENABLED)
    anonymous: bool  # anonymous connections may subscribe and read
    recover: bool  # history replayed on subscribe and resume
    namespace: str | None = None  # the pattern that matched, None for the global settings


_cache: dict[str, ChannelOptions] = {}
_cache_config: Any = None
_defaults: tuple[Any, ChannelOptions, ChannelOptions] | None = None


def options(channel: str) -> ChannelOptions:
    """The options of a channel."""
    global _cache_config
    config = settings.REALTIME
    if not config.channel_namespaces:
        return _global(config, channel)
    if _cache_config is not config:
        _cache.clear()
        _cache_config = config
    found = _cache.get(channel)
    if found is None:
        found = _resolve(config, channel)
        if len(_cache) >= OPTIONS_CACHE_MAX:
            _cache.clear()
        _cache[channel] = found
    return found


def _global(config: Any, channel: str) -> ChannelOptions:
    """The global settings' options (two objects: presence-* channels, and the rest)."""
    global _defaults
    if _defaults is None or _defaults[0] is not config:
        _defaults = (config, _from_settings(config, join_leave=False), _from_settings(config, join_leave=True))
    return _defaults[2] if protocol.is_presence_channel(channel) else _defaults[1]


def _from_settings(config: Any, join_leave: bool) -> ChannelOptions:
    return ChannelOptions(
        history_size=config.channel_history_size,
        history_ttl=config.channel_history_ttl,
        presence=True,
        join_leave=join_leave,
        client_publish=config.client_publish_enabled,
        anonymous=True,
        recover=True,
    )


def _resolve(config: Any, channel: str) -> ChannelOptions:
    base = _global(config, channel)
    for namespace in config.channel_namespaces:
        if fnmatchcase(channel, namespace.pattern):
            return ChannelOptions(
                history_size=_pick(namespace.history_size, base.history_size),
                history_ttl=_pick(namespace.history_ttl, base.history_ttl),
                presence=_pick(namespace.presence, base.presence),
                join_leave=_pick(namespace.join_leave, base.join_leave),
                client_publish=_pick(namespace.client_publish, base.client_publish),
                anonymous=_pick(namespace.anonymous, base.anonymous),
                recover=_pick(namespace.recover, base.recover),
                namespace=namespace.pattern,
            )
    return base


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def ttls() -> set[int]:
    """Every history TTL in use (the global one and the namespaces')."""
    config = settings.REALTIME
    return {config.channel_history_ttl} | {ns.history_ttl for ns in config.channel_namespaces if ns.history_ttl}
