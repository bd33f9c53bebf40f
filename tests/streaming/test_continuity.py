"""Gap filling and ordering of persisted messages at the hub (streaming.continuity)."""

from __future__ import annotations

import asyncio
import re

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from streaming import continuity, metrics, protocol
from streaming.continuity import Continuity
from streaming.history import history_append

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def persist(channel: str, count: int) -> list[dict]:
    envelopes = []
    for n in range(count):
        envelope = protocol.envelope(type="text", channel=channel, content=n)
        with transaction.atomic():
            history_append([(channel, envelope, protocol.encode(envelope))])
        envelopes.append(envelope)
    return envelopes


def message(envelope: dict) -> dict:
    return protocol.bus_message(envelope["channel"], protocol.encode(envelope), envelope["offset"], envelope["type"])


def unrecoverable() -> float:
    """realtime_messages_unrecoverable_total as /metrics shows it."""
    text = metrics.exposition()[0].decode()
    return float(re.search(r"^realtime_messages_unrecoverable_total (\S+)$", text, re.MULTILINE).group(1))


class Recorder:
    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.continuity = Continuity(lambda m: self.offsets.append(m["offset"]))

    def offer(self, *messages: dict) -> None:
        for item in messages:
            if self.continuity.admit(item):
                self.continuity.dispatch(item)

    async def settle(self) -> None:
        for _ in range(100):
            if not self.continuity._tasks:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("recovery did not finish")


async def test_in_order_messages_pass_and_duplicates_are_dropped():
    envelopes = await persist("c", 3)
    recorder = Recorder()
    recorder.offer(*(message(e) for e in envelopes), message(envelopes[1]))
    assert recorder.offsets == [1, 2, 3]


async def test_a_gap_is_filled_from_history_once_and_in_order():
    envelopes = await persist("g", 6)
    recorder = Recorder()
    recorder.offer(message(envelopes[0]), message(envelopes[3]))  # 2 and 3 were lost on the bus
    recorder.offer(message(envelopes[4]))  # arrives while the gap is being filled: held
    await recorder.settle()
    recorder.offer(message(envelopes[5]), message(envelopes[2]))  # the late 3 is a duplicate by now
    assert recorder.offsets == [1, 2, 3, 4, 5, 6]


async def test_a_gap_wider_than_a_history_page_is_filled_completely(realtime):
    realtime(history_page_max_bytes=1024)  # about four stored envelopes a page
    envelopes = await persist("wide", 20)
    recorder = Recorder()
    before = unrecoverable()
    recorder.offer(message(envelopes[0]), message(envelopes[19]))  # 2 … 19 were lost on the bus
    await recorder.settle()
    assert recorder.offsets == list(range(1, 21))
    assert unrecoverable() == before


async def test_out_of_order_arrival_is_delivered_in_order():
    envelopes = await persist("o", 3)
    recorder = Recorder()
    recorder.offer(message(envelopes[0]), message(envelopes[2]), message(envelopes[1]))
    await recorder.settle()
    assert recorder.offsets == [1, 2, 3]


async def test_position_check_recovers_a_lost_tail_after_two_checks():
    envelopes = await persist("t", 3)
    recorder = Recorder()
    recorder.offer(message(envelopes[0]))  # 2 and 3 were lost and nothing came after them
    await recorder.continuity.check_positions()
    assert recorder.offsets == [1]  # one look behind could be messages in flight
    await recorder.continuity.check_positions()
    await recorder.settle()
    assert recorder.offsets == [1, 2, 3]


async def test_a_gap_history_no_longer_holds_is_skipped(realtime):
    realtime(channel_history_size=2)
    envelopes = await persist("short", 5)  # only 4 and 5 are retained
    recorder = Recorder()
    recorder.offer(message(envelopes[0]), message(envelopes[4]))
    await recorder.settle()
    assert recorder.offsets == [1, 4, 5]


async def test_an_anchored_channel_recovers_messages_lost_before_any_arrived():
    await persist("anchored", 2)  # published before the join: not for this process
    recorder = Recorder()
    await recorder.continuity.anchor("anchored")
    await persist("anchored", 2)  # 3 and 4: the bus lost both, nothing arrived at all
    await recorder.continuity.check_positions()
    await recorder.continuity.check_positions()
    await recorder.settle()
    assert recorder.offsets == [3, 4]


async def test_channels_anchored_together_share_one_query(monkeypatch):
    await persist("first", 1)
    reads = []

    def history_heads(channels):
        reads.append(channels)
        return real_history_heads(channels)

    real_history_heads = continuity.history_heads
    monkeypatch.setattr(continuity, "history_heads", history_heads)
    recorder = Recorder()
    await asyncio.gather(*(recorder.continuity.anchor(name) for name in ("first", "second", "third")))
    assert reads == [["first", "second", "third"]]
    assert recorder.continuity.offsets == {"first": 1, "second": 0, "third": 0}


async def test_heads_of_more_channels_than_a_statement_takes_are_all_read():
    """A process can follow more channels than SQLite (32,766) or PostgreSQL (65,535) accept as
    parameters of one statement: the heads are read in chunks, none missed at a chunk's edge."""
    from streaming.history import HEADS_CHUNK, history_heads

    names = [f"absent-{n}" for n in range(70_000)]
    names[0], names[HEADS_CHUNK - 1], names[HEADS_CHUNK], names[-1] = "head-a", "head-b", "head-c", "head-d"
    for count, name in enumerate(("head-a", "head-b", "head-c", "head-d"), start=1):
        await persist(name, count)
    heads = await sync_to_async(history_heads)(names)
    offsets = {name: head for name, (head, _epoch) in heads.items()}
    assert offsets == {"head-a": 1, "head-b": 2, "head-c": 3, "head-d": 4}


async def test_a_channel_far_behind_is_recovered_at_the_first_check(realtime):
    realtime(channel_history_size=8)  # a quarter of history behind: 2 offsets
    envelopes = await persist("far", 3)
    recorder = Recorder()
    recorder.offer(message(envelopes[0]))
    await recorder.continuity.check_positions()
    await recorder.settle()
    assert recorder.offsets == [1, 2, 3]


async def test_offsets_pruned_before_recovery_are_counted(realtime):
    realtime(channel_history_size=2)
    envelopes = await persist("pruned", 5)  # 2 and 3 are gone from history
    recorder = Recorder()
    before = unrecoverable()
    recorder.offer(message(envelopes[0]), message(envelopes[4]))
    await recorder.settle()
    assert recorder.offsets == [1, 4, 5]
    assert unrecoverable() - before == 2
