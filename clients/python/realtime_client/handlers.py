"""Callbacks: registered by name (`"*"` for every name), run one at a time in arrival order."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any], Any]
WILDCARD = "*"


class Handlers:
    """Callbacks by name; a callback registered under `"*"` matches every name."""

    def __init__(self) -> None:
        self._by_name: defaultdict[str, list[Handler]] = defaultdict(list)

    def add(self, name: str, handler: Handler) -> Handler:
        if not callable(handler):
            raise TypeError(f"a handler must be callable, got {handler!r}")
        self._by_name[name].append(handler)
        return handler

    def decorator(self, name: str) -> Callable[[Handler], Handler]:
        """`@registry.decorator("text")`: register the decorated function, return it unchanged."""
        return lambda handler: self.add(name, handler)

    def matching(self, *names: str) -> list[Handler]:
        """Callbacks registered under any of `names`, then those under `"*"`; each at most once."""
        found: list[Handler] = []
        for name in (*names, WILDCARD):
            for handler in self._by_name.get(name, ()):
                if handler not in found:
                    found.append(handler)
        return found


class Dispatcher:
    """Runs callbacks in a task of their own, one at a time, in the order they were queued.

    The connection's reader only queues work, so a callback may await a request whose reply the
    reader has yet to read, and a slow callback never stops heartbeats from being read. A callback
    that raises is logged and reported through `on_failure`; the ones after it still run.
    """

    def __init__(self, on_failure: Callable[[BaseException, str], None], logger: logging.Logger) -> None:
        self._on_failure = on_failure
        self._logger = logger
        self._queue: asyncio.Queue[tuple[list[Handler], Any, str] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="streaming-client-callbacks")

    def put(self, handlers: list[Handler], argument: Any, label: str) -> None:
        if handlers and self._task is not None and not self._task.done():
            self._queue.put_nowait((handlers, argument, label))

    async def stop(self, timeout: float) -> None:
        """Run what is already queued (for at most `timeout` seconds), then end the task."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        self._queue.put_nowait(None)
        if task is asyncio.current_task():
            return  # stopped from inside a callback: the task ends once that callback returns
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            self._logger.warning("callbacks still running after %.1f s; cancelling them", timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while (job := await self._queue.get()) is not None:
            handlers, argument, label = job
            for handler in handlers:
                await self._call(handler, argument, label)

    async def _call(self, handler: Handler, argument: Any, label: str) -> None:
        try:
            result = handler(argument)
            if inspect.isawaitable(result):
                await result
        except Exception as error:  # the caller's code: report it and keep dispatching
            self._logger.exception("%s %r raised", label, handler)
            self._on_failure(error, label)
