"""Wire-format validation: names, ids and types are matched in full (no `$`-before-newline)."""

from __future__ import annotations

import pytest

from streaming import protocol
from streaming.errors import InvalidChannel, InvalidMessage


@pytest.mark.parametrize("name", ["a" * 100 + "\n", "news\n", "news\r", "\nnews", "a" * 101, "", "-news", "news "])
def test_validate_channel_refuses_names_that_do_not_match_in_full(name):
    with pytest.raises(InvalidChannel):
        protocol.validate_channel(name)


@pytest.mark.parametrize("name", ["a" * 100, "news", "user:42", "chat.room-1@x"])
def test_validate_channel_accepts_valid_names(name):
    assert protocol.validate_channel(name) == name


@pytest.mark.parametrize("user_id", ["alice\n", "a" * 65, "", "a\x00b"])
def test_validate_user_id_refuses_ids_that_do_not_match_in_full(user_id):
    with pytest.raises(InvalidMessage):
        protocol.validate_user_id(user_id)


@pytest.mark.parametrize("type_", ["notification\n", "error\n", "text\n", "a" * 65, "stream-open\n"])
def test_message_type_field_refuses_types_that_do_not_match_in_full(type_):
    with pytest.raises(InvalidMessage) as refused:
        protocol.parse_frame({"action": "send_to_channel", "data": {"channel": "c", "content": 1, "type": type_}})
    assert "type" in refused.value.fields


@pytest.mark.parametrize("type_", ["connected", "stream-open", "stream-reset", "stream-error", "notification"])
def test_types_the_server_emits_are_reserved(type_):
    assert type_ in protocol.RESERVED_TYPES


def test_timestamps_and_ids_have_the_documented_shapes():
    import re
    import uuid
    from datetime import UTC, datetime

    before = datetime.now(UTC)
    stamp = protocol.now_iso()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    assert before <= datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= after
    ids = {protocol.new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


def test_ids_are_never_shared_between_threads_or_with_a_forked_child():
    import os
    import threading

    made: list[list[str]] = [[] for _ in range(8)]

    def make(into: list[str]) -> None:
        for _ in range(5_000):  # each thread crosses many 256-id pools, racing the others for them
            into.append(protocol.new_id())

    threads = [threading.Thread(target=make, args=(ids,)) for ids in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in made for i in ids]
    assert len(set(every)) == len(every) == 40_000

    protocol.new_id()  # the parent's pool is part used
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, ",".join(protocol.new_id() for _ in range(300)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        from_child = pipe.read().split(",")
    from_parent = [protocol.new_id() for _ in range(300)]
    assert len(from_child) == 300 and not set(from_child) & set(from_parent)
