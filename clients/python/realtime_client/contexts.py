"""The client state, and the small records passed to lifecycle callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from realtime_client.exceptions import ClientError


class ClientState(Enum):
    """Where a client is in its life.

    DISCONNECTED: never connected, or the first `connect()` failed.
    CONNECTING: opening a connection, or waiting to reconnect after losing one.
    CONNECTED: greeted by the server; requests can be sent.
    CLOSED: `disconnect()` was called, or the client gave up (fatal error, attempts exhausted).
    """

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True)
class ConnectedContext:
    """Passed to `on_connect`: the server's greeting (`connected` frame or event).

    `channels`: the channels of the connection (WS: those subscribed, server-side ones included;
    SSE: every channel of the stream). `server_channels`: those the server joined at connect
    without a subscribe (the token's `subs` claim, the application's connect hook); `refused`:
    server-side channels it refused, with the reason; `info`: what the connect hook attached.
    """

    connection_id: str
    user_id: str | None
    heartbeat_interval: float
    channels: list[str] = field(default_factory=list)
    reconnected: bool = False
    greeting: dict[str, Any] = field(default_factory=dict, repr=False)
    server_channels: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    info: Any = None


@dataclass(frozen=True)
class DisconnectedContext:
    """Passed to `on_disconnect`: why the connection ended and whether the client will retry."""

    code: int | None
    reason: str
    reconnecting: bool
    error: ClientError | None = None


@dataclass(frozen=True)
class ReconnectedContext:
    """Passed to `on_reconnect` once channels are restored.

    `recovered` maps each channel to True when every message missed during the outage was
    replayed, False when history no longer reached back (or there was no position to resume from).
    """

    attempts: int
    recovered: dict[str, bool]


@dataclass(frozen=True)
class ResetContext:
    """Passed to `on_reset`: a channel's history was reset, so its offsets start again under a new
    epoch; the client's position there is now (`epoch`, `offset`).

    `resumed` is True when the client found out on resuming after a reconnection (what was
    published in the new epoch meanwhile is not replayed: `recovery[channel]` is False), False
    when the server told it live (`stream-reset`, offset 0).
    """

    channel: str
    epoch: str
    offset: int
    resumed: bool


@dataclass(frozen=True)
class ErrorContext:
    """Passed to `on_error`: a failure the client handled without raising to the caller."""

    error: BaseException
    while_doing: str
