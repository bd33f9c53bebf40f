"""The application's say: connect, subscribe and publish hooks (README, "Hooks").

A hook is a callable named by a dotted path in a setting (REALTIME_CONNECT_HOOK,
REALTIME_SUBSCRIBE_HOOK, REALTIME_PUBLISH_HOOK), sync or async, given a `HookContext`. It answers:

- `None` — no objection: the built-in rules decide;
- `True` or `Allow(...)` — allowed; for subscribe this also opens a protected channel
  (`private-*`, `presence-*`) that the token does not list; for connect `Allow` may carry
  server-side `channels` and `info`, for publish a replacement `content`;
- `False`, or `Refuse(reason)` returned or raised — refused with that reason (`forbidden`, close
  4403, HTTP 403).

An async hook runs on the event loop (it must not block it); a sync one runs on a thread of the
hooks' own pool, so it may use the ORM. A hook that does not answer within REALTIME_HOOK_TIMEOUT
seconds, or raises, refuses that request only, with `unavailable` (logged). Hooks apply to
WebSocket and SSE connections and to client publishes; the HTTP publish API is trusted and skips them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.utils.module_loading import import_string

from streaming import live
from streaming.auth import Identity, subscribe_refusal
from streaming.errors import Forbidden, StreamingError, Unavailable
from streaming.protocol import check_content

logger = logging.getLogger(__name__)

HOOK_THREADS = 8  # sync hooks run at most this many at once per process; the rest wait their turn
EVENTS = ("connect", "subscribe", "publish")
_UNSET: Any = object()


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a setattr call per field
class HookContext:
    """What a hook is told about the request it decides."""

    event: str  # "connect" | "subscribe" | "publish"
    identity: Identity  # who: kind, user_id, name, role, claims
    connection_id: str
    transport: str  # "ws" | "sse"
    ip: str | None
    channel: str | None = None  # subscribe, publish
    type: str | None = None  # publish: the message type
    content: Any = None  # publish: the message content
    info: Any = None  # what the connect hook attached to the connection

    @property
    def user_id(self) -> str | None:
        return self.identity.user_id

    @property
    def claims(self) -> dict[str, Any]:
        return dict(self.identity.claims)


@dataclass(frozen=True)
class Allow:
    """An explicit yes, with what the hook adds: server-side `channels` and `info` (connect), a
    replacement `content` (publish)."""

    channels: tuple[str, ...] | list[str] = ()
    info: Any = None
    content: Any = field(default=_UNSET)

    @property
    def replaces_content(self) -> bool:
        return self.content is not _UNSET


class Refuse(Exception):
    """A hook's no, with the reason the client is told."""

    def __init__(self, reason: str = "Refused by the application.") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Hook:
    function: Any
    is_async: bool


_loaded: dict[str, _Hook] = {}
_executor: ThreadPoolExecutor | None = None
_events: tuple[Any, frozenset[str]] = (None, frozenset())  # the settings, and the events with a hook there


def configured(event: str) -> bool:
    """Whether the application has a hook for `event` (asked on every subscribe and publish)."""
    global _events
    config = settings.REALTIME
    if _events[0] is not config:
        _events = (config, frozenset(e for e in EVENTS if getattr(config, f"realtime_{e}_hook")))
    return event in _events[1]


def load(event: str) -> _Hook | None:
    """The hook of an event, imported once; ImportError/TypeError names the setting at fault."""
    path = getattr(settings.REALTIME, f"realtime_{event}_hook")
    if not path:
        return None
    hook = _loaded.get(path)
    if hook is None:
        setting = f"REALTIME_{event.upper()}_HOOK"
        try:
            function = import_string(path)
        except ImportError as error:
            raise ImportError(f"{setting}={path!r}: {error}") from None
        if not callable(function):
            raise TypeError(f"{setting}={path!r} is not callable")
        hook = _loaded[path] = _Hook(function, inspect.iscoroutinefunction(function))
    return hook


def check_all() -> None:
    """Import every configured hook (at start-up: a wrong path stops the server with one line)."""
    for event in EVENTS:
        load(event)


async def run(context: HookContext) -> Allow | None:
    """Ask the hook of `context.event`: None (no objection or no hook), an `Allow`, or a raised
    Forbidden (refused) / Unavailable (timed out or failed)."""
    hook = load(context.event)
    if hook is None:
        return None
    timeout = settings.REALTIME.realtime_hook_timeout
    try:
        if hook.is_async:
            answer = await _timed(hook.function(context), timeout)
        else:
            async with asyncio.timeout(timeout):
                answer = await asyncio.get_running_loop().run_in_executor(_pool(), _call_sync, hook.function, context)
    except Refuse as refused:
        raise Forbidden(_reason(refused.reason)) from None
    except StreamingError:
        raise
    except TimeoutError:
        logger.warning("%s hook timed out after %g s (connection %s)", context.event, timeout, context.connection_id)
        raise Unavailable(f"The application's {context.event} hook did not answer in time.") from None
    except Exception:
        logger.exception("%s hook failed (connection %s)", context.event, context.connection_id)
        raise Unavailable(f"The application's {context.event} hook failed.") from None
    return _decision(context.event, answer)


async def _timed(coroutine: Any, timeout: float) -> Any:
    """Await an async hook's coroutine, timed out after `timeout` seconds once it waits.

    Its first step runs at once: a hook that answers without waiting for anything (most do) costs
    no timer — arming `asyncio.timeout` took 7 µs, more than the rest of a no-op hook's path
    (bench/OPTIMISATIONS.md). One that waits goes on under the timeout from where it stopped.
    """
    try:
        waiting_for = coroutine.send(None)
    except StopIteration as done:
        return done.value
    async with asyncio.timeout(timeout):
        return await _Resumed(coroutine, waiting_for)


class _Resumed:
    """A coroutine already started and suspended on `waiting_for`, awaited from there on: each
    step the task runs (a send of None, or an exception thrown in) goes to the coroutine."""

    __slots__ = ("coroutine", "waiting_for")

    def __init__(self, coroutine: Any, waiting_for: Any) -> None:
        self.coroutine, self.waiting_for = coroutine, waiting_for

    def __await__(self) -> Any:
        coroutine, waiting_for = self.coroutine, self.waiting_for
        while True:
            try:
                yield waiting_for
            except BaseException as error:  # cancelled (the timeout), or thrown in by the task
                try:
                    waiting_for = coroutine.throw(error)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting_for = coroutine.send(None)
                except StopIteration as done:
                    return done.value


def _decision(event: str, answer: Any) -> Allow | None:
    if answer is None:
        return None
    if answer is True:
        return Allow()
    if answer is False:
        raise Forbidden("Refused by the application.")
    if isinstance(answer, Refuse):
        raise Forbidden(_reason(answer.reason))
    if isinstance(answer, Allow):
        return answer
    logger.error("%s hook answered %r; expected None, a bool, Allow or Refuse", event, type(answer).__name__)
    raise Unavailable(f"The application's {event} hook gave an answer the server does not understand.")


def _reason(reason: Any) -> str:
    text = str(reason).replace("\x00", "").strip() or "Refused by the application."
    return text[:200]


def _call_sync(function: Any, context: HookContext) -> Any:
    close_old_connections()  # as Django does around a request: no connection past its max age
    try:
        return function(context)
    finally:
        close_old_connections()


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=HOOK_THREADS, thread_name_prefix="realtime-hook")
    return _executor


# ---------------------------------------------------------------------------------------------
# The decisions built on them


async def authorize_subscription(connection: Any, channel: str) -> None:
    """Raise Forbidden/Unavailable unless `connection` (a ClientConnection) may subscribe to or
    read `channel`: the built-in rules, then the subscribe hook, which may open a protected channel
    the token does not list by answering `True`/`Allow`, then a live model channel's permission."""
    refused, grantable = subscribe_refusal(connection.identity, channel)
    if refused is not None and not (grantable and configured("subscribe")):
        raise refused
    if configured("subscribe"):
        answer = await run(connection.hook_context("subscribe", channel=channel))
        if refused is not None and answer is None:
            raise refused
    if live.is_live_channel(channel):  # and a live model's channel asks its permission as well
        await database_sync_to_async(live.authorize)(connection.identity, channel)


async def authorize_client_publish(connection: Any, channel: str, message_type: str, content: Any) -> Any:
    """The content to publish, as the publish hook leaves it (the built-in checks are done)."""
    if not configured("publish"):
        return content
    answer = await run(connection.hook_context("publish", channel=channel, type=message_type, content=content))
    if answer is None or not answer.replaces_content:
        return content
    try:
        return check_content(answer.content)
    except ValueError:
        logger.error("publish hook replaced the content with one nested too deep")
        raise Unavailable("The application's publish hook gave content the server cannot send.") from None


def authorize_read(identity: Identity, channel: str, ip: str | None) -> None:
    """`authorize_subscription` for a sync HTTP read of a channel (history, presence) by a client;
    admins (the server API) skip the hook."""
    refused, grantable = subscribe_refusal(identity, channel)
    asks = configured("subscribe") and not identity.is_admin
    if refused is not None and not (grantable and asks):
        raise refused
    if asks:
        context = HookContext("subscribe", identity, "", "http", ip, channel=channel)
        answer = async_to_sync(run)(context)
        if refused is not None and answer is None:
            raise refused
    live.authorize(identity, channel)
