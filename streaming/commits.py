"""Group commit: the persisted publishes of this process's event loop share transactions.

A persisted publish on the loop does not take a database thread of its own: it joins the
pending group and waits. One flush takes everything pending (up to COMMIT_GROUP_MAX messages)
into one transaction — one upsert of the channel heads, one insert of the messages — and after
the commit hands the messages to the bus in offset order, before the publishers wake up. A unit
(one publish, or one batch) is all-or-nothing: a failed transaction fails every unit in it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.db import transaction

from streaming import delivery
from streaming.history import history_append

if TYPE_CHECKING:
    from streaming.services import Outgoing

logger = logging.getLogger(__name__)

COMMIT_GROUP_MAX = 2000  # messages per transaction


def persist(outgoings: list[Outgoing]) -> None:
    """Store outgoing messages in their channels' histories, in one transaction (sync)."""
    epochs: dict[str, str] = {}
    with transaction.atomic():
        texts = history_append([(o.channel, o.envelope, o.text) for o in outgoings], epochs)
    for outgoing, text in zip(outgoings, texts, strict=True):
        outgoing.text = text
        outgoing.epoch = epochs[outgoing.channel]


class GroupCommit:
    """The pending persisted publishes of one event loop, and the task that commits them."""

    def __init__(self) -> None:
        self._pending: list[tuple[list[Outgoing], asyncio.Future]] = []
        self._flushing: asyncio.Task | None = None

    async def commit(self, outgoings: list[Outgoing]) -> None:
        """Persist a unit of messages (sets their offsets and texts), deliver it, then return."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((outgoings, done))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="streaming-group-commit")
        await done

    async def _flush(self) -> None:
        while self._pending:
            group, size = [], 0
            while self._pending and (not group or size + len(self._pending[0][0]) <= COMMIT_GROUP_MAX):
                unit = self._pending.pop(0)
                group.append(unit)
                size += len(unit[0])
            outgoings = [outgoing for unit, _ in group for outgoing in unit]
            try:
                await database_sync_to_async(persist)(outgoings)
            except Exception as error:  # the database said no: every publisher of the group hears it
                for _, done in group:
                    if not done.done():
                        done.set_exception(error)
                continue
            await delivery.asend_committed_many(outgoings)
            for _, done in group:
                if not done.done():
                    done.set_result(None)


_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = weakref.WeakKeyDictionary()


async def acommit(outgoings: list[Outgoing]) -> None:
    """Persist and deliver a unit of messages through the running loop's group commit."""
    loop = asyncio.get_running_loop()
    group = _groups.get(loop)
    if group is None:
        group = _groups[loop] = GroupCommit()
    await group.commit(outgoings)
