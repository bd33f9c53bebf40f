"""Recording what the one publish path delivers: `PublishRecorder` and `record_published()`.

A recorder sees each message when it is handed to the bus (`streaming.delivery`), which is when
subscribers would get it: a persisted message once its transaction has committed, so a publish in
a transaction that rolls back records nothing, and a message the bus refused is recorded when the
retry delivers it. What is recorded is the envelope as subscribers receive it (decoded from the
one encoded text), plus `persist` and the `epoch` of a persisted message's offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streaming import delivery, protocol

if TYPE_CHECKING:
    from streaming.services import Outgoing

__all__ = ["CRITERIA", "PublishRecorder", "PublishedMessage", "record_published"]

# The keys `assert_published` and friends match on: the fields of a PublishedMessage.
CRITERIA = ("channel", "type", "content", "id", "offset", "sender", "timestamp", "persist", "epoch")
LISTED_MAX = 50  # records shown in a failure message


@dataclass(frozen=True, slots=True)
class PublishedMessage:
    """One delivered message: the envelope's fields, whether it was persisted, and its epoch."""

    channel: str
    type: str
    content: Any
    id: str
    offset: int | None
    sender: dict[str, Any] | None
    timestamp: str
    persist: bool
    epoch: str | None
    envelope: dict[str, Any] = field(repr=False, compare=False)  # as subscribers receive it

    @classmethod
    def from_outgoing(cls, outgoing: Outgoing) -> PublishedMessage:
        envelope = protocol.decode(outgoing.text)
        return cls(
            channel=outgoing.channel, type=envelope["type"], content=envelope["content"], id=envelope["id"],
            offset=envelope["offset"], sender=envelope["sender"], timestamp=envelope["timestamp"],
            persist=outgoing.persist, epoch=outgoing.epoch, envelope=envelope,
        )  # fmt: skip

    def matches(self, criteria: dict[str, Any]) -> bool:
        return not self.mismatches(criteria)

    def mismatches(self, criteria: dict[str, Any]) -> list[str]:
        """The criteria this message does not meet (a criterion is a value compared equal, or a
        callable taking the field's value and returning whether it is right)."""
        return [key for key, expected in criteria.items() if not _meets(getattr(self, key), expected)]

    def describe(self) -> str:
        text = f"channel={self.channel!r} type={self.type!r} content={self.content!r} id={self.id!r}"
        if self.persist:
            text += f" offset={self.offset!r} epoch={self.epoch!r}"
        if self.sender is not None:
            text += f" sender={self.sender!r}"
        return text


def _meets(value: Any, expected: Any) -> bool:
    if callable(expected):
        return bool(expected(value))
    return value == expected


def _describe_criteria(criteria: dict[str, Any]) -> str:
    if not criteria:
        return "(any message)"
    return ", ".join(f"{key}={_describe_value(value)}" for key, value in criteria.items())


def _describe_value(value: Any) -> str:
    if callable(value):
        return f"<predicate {getattr(value, '__qualname__', None) or type(value).__name__}>"
    return repr(value)


def _check_criteria(criteria: dict[str, Any]) -> None:
    unknown = sorted(set(criteria) - set(CRITERIA))
    if unknown:
        raise TypeError(f"unknown criteria {', '.join(unknown)}; use any of {', '.join(CRITERIA)}")


class PublishRecorder:
    """Every message delivered through the publish path while it is active, in delivery order.

    Thread-safe: publishes from sync code (views, `on_commit` callbacks, threads) and from event
    loops are recorded alike. Criteria are keyword arguments naming fields of `PublishedMessage`
    (`channel`, `type`, `content`, `id`, `offset`, `sender`, `timestamp`, `persist`, `epoch`),
    each a value compared equal or a predicate (`content=lambda c: c["n"] > 1`).
    """

    def __init__(self) -> None:
        self._messages: list[PublishedMessage] = []
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.active = False

    # -- recording

    def start(self) -> PublishRecorder:
        """Begin recording (idempotent)."""
        if not self.active:
            delivery.recorders.append(self._record)
            self.active = True
        return self

    def stop(self) -> None:
        """Stop recording; what was recorded stays readable."""
        if self.active:
            delivery.recorders.remove(self._record)
            self.active = False

    def _record(self, outgoing: Outgoing) -> None:
        message = PublishedMessage.from_outgoing(outgoing)
        with self._lock:
            self._messages.append(message)
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(event.set)

    # -- reading

    @property
    def messages(self) -> list[PublishedMessage]:
        """Everything recorded so far, oldest first (a copy)."""
        with self._lock:
            return list(self._messages)

    def on(self, channel: str) -> list[PublishedMessage]:
        """The messages delivered to one channel, oldest first."""
        return [message for message in self.messages if message.channel == channel]

    def filter(self, **criteria: Any) -> list[PublishedMessage]:
        """The messages meeting every criterion, oldest first."""
        _check_criteria(criteria)
        return [message for message in self.messages if message.matches(criteria)]

    def clear(self) -> None:
        """Forget what was recorded so far (recording goes on)."""
        with self._lock:
            self._messages.clear()

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[PublishedMessage]:
        return iter(self.messages)

    def __repr__(self) -> str:
        return f"<PublishRecorder {len(self)} message(s){'' if self.active else ', stopped'}>"

    # -- assertions

    def assert_published(self, *, times: int | None = None, **criteria: Any) -> PublishedMessage:
        """Assert a message meeting every criterion was delivered and return the first such one;
        with `times`, that exactly so many were. The failure lists what was delivered."""
        matching = self.filter(**criteria)
        if not matching or (times is not None and len(matching) != times):
            wanted = "no" if not matching else f"{len(matching)} (not {times})"
            raise AssertionError(self._report(f"{wanted} published message(s) match", criteria))
        return matching[0]

    def assert_not_published(self, **criteria: Any) -> None:
        """Assert no message meeting every criterion was delivered (none at all without criteria)."""
        matching = self.filter(**criteria)
        if matching:
            raise AssertionError(self._report(f"{len(matching)} published message(s) match", criteria, matching))

    async def wait_for(self, timeout: float = 5.0, **criteria: Any) -> PublishedMessage:
        """Wait until a message meeting every criterion has been delivered (one delivered already
        counts) and return the first; AssertionError after `timeout` seconds. For publishes made
        by other tasks, threads or `on_commit` callbacks."""
        _check_criteria(criteria)
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event.clear()
                    matching = self.filter(**criteria)
                    if matching:
                        return matching[0]
                    await event.wait()
        except TimeoutError:
            message = f"no published message matched within {timeout} s"
            raise AssertionError(self._report(message, criteria)) from None
        finally:
            with self._lock:
                self._waiters.remove(waiter)

    def _report(self, headline: str, criteria: dict[str, Any], shown: list[PublishedMessage] | None = None) -> str:
        everything = self.messages
        lines = [f"{headline}: {_describe_criteria(criteria)}"]
        listed = everything if shown is None else shown
        if not everything:
            lines.append("nothing was published")
            return "\n".join(lines)
        lines.append(f"published ({len(everything)}):" if shown is None else f"matching ({len(shown)}):")
        for index, message in enumerate(listed[:LISTED_MAX]):
            differs = message.mismatches(criteria) if shown is None and criteria else []
            suffix = f"  <- differs in {', '.join(differs)}" if differs and len(differs) < len(criteria) else ""
            lines.append(f"  [{index}] {message.describe()}{suffix}")
        if len(listed) > LISTED_MAX:
            lines.append(f"  … and {len(listed) - LISTED_MAX} more")
        return "\n".join(lines)


@contextlib.contextmanager
def record_published() -> Iterator[PublishRecorder]:
    """Record the messages delivered inside the block: `with record_published() as published:`."""
    recorder = PublishRecorder().start()
    try:
        yield recorder
    finally:
        recorder.stop()
