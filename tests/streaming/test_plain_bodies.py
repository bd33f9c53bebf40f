"""The plain readers of publish bodies (streaming/api/plain.py) against the serializers: whatever a
plain reader accepts, the serializer accepts with the same result; whatever it declines goes to
the serializer, whose errors the API answers with."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming import protocol
from streaming.api import plain
from streaming.api import serializers as s
from streaming.api.publish import _batch_item, _message

ABSENT = object()

deep = [[]]
for _ in range(protocol.CONTENT_DEPTH_MAX + 1):
    deep = [deep]

channels = st.sampled_from(
    ["room-1", "user:u7", "broadcast", "a" * 100, "a" * 101, "bad name", "", "news\n", "é", "-x", 123, 1.5, None, True]
)
user_ids = st.sampled_from(["u1", "x" * 64, "x" * 65, "bad id", "", "u1\n", 42, None, False])
flags = st.sampled_from([True, False, "true", "false", 1, 0, None, "yes"])
ids = st.sampled_from(
    ["m-1", " m ", "m\n", "", "x" * 64, "x" * 65, "a\x00b", "é", "\u2028x", "\x1fx", "\ud800x", 5, None, True, [1]]
)
types = st.sampled_from(["chat", "x y", "", "a" * 64, "a" * 65, "chat\n", "-chat", None, 1])
contents = st.sampled_from([None, 1, "s", True, {"a": [1]}, [], {}, deep, [deep]])


valid_channels = st.sampled_from(["room-1", "user:u7", "broadcast", "a" * 100])
valid_messages = st.fixed_dictionaries(
    {"content": contents},
    optional={"id": st.sampled_from(["m-1", "x" * 64]), "type": st.sampled_from(["chat", "a" * 64])},
)
valid_items = st.one_of(
    st.fixed_dictionaries(
        {"channel": valid_channels, "message": valid_messages},
        optional={"persist": st.booleans(), "broadcast": st.just(False)},
    ),
    st.fixed_dictionaries({"user_id": st.just("u7"), "message": valid_messages}, optional={"persist": st.just(False)}),
    st.fixed_dictionaries(
        {"broadcast": st.just(True), "message": valid_messages}, optional={"persist": st.just(False)}
    ),
)
item_edits = st.sampled_from(["channel", "user_id", "broadcast", "persist", "message", "extra"]).flatmap(
    lambda key: st.tuples(
        st.just(key),
        {"channel": channels, "user_id": user_ids, "message": st.sampled_from([None, "text", [1], 7])}.get(key, flags),
    )
)
message_edits = st.tuples(st.sampled_from(["id", "type", "content", "extra"]), st.one_of(ids, types, contents, flags))


@st.composite
def items(draw) -> object:
    """A valid batch item, then up to three edits: a field set to an edge value, or removed."""
    item = draw(valid_items)
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            key, value = draw(item_edits)
            target = item
        else:
            key, value = draw(message_edits)
            target = item["message"] if isinstance(item.get("message"), dict) else item
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = value
    return (
        draw(st.one_of(st.just(item), st.sampled_from([None, "item", [], 3])))
        if draw(st.integers(0, 20)) == 0
        else item
    )


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(item=items())
def test_a_batch_item_read_plainly_is_the_one_the_serializer_reads(item):
    publish = plain.batch_item(item)
    serializer = s.BatchItemSerializer(data=item)
    valid = serializer.is_valid()
    if publish is not None:
        assert valid, (item, serializer.errors)
        assert _batch_item(serializer.validated_data) == publish


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(body=items())
def test_a_channel_publish_read_plainly_is_the_one_the_serializer_reads(body):
    publish = plain.channel_publish(body)
    serializer = s.ChannelPublishSerializer(data=body)
    valid = serializer.is_valid()
    if publish is not None:
        assert valid, (body, serializer.errors)
        data = serializer.validated_data
        assert _message(data["message"], data["channel"], data["persist"]) == publish


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"channel": "room-1", "message": {"content": {"text": "hi"}}}]},
        {"messages": [{"channel": "room-1", "message": {"content": 1, "id": "m-1", "type": "chat"}, "persist": True}]},
        {
            "messages": [
                {"user_id": "u7", "message": {"content": None}},
                {"broadcast": True, "message": {"content": []}},
            ]
        },
    ],
)
def test_documented_batches_are_read_plainly(body):
    publishes = plain.batch(body)
    assert publishes is not None and len(publishes) == len(body["messages"])
    serializer = s.BatchPublishSerializer(data=body)
    assert serializer.is_valid()
    assert [_batch_item(item) for item in serializer.validated_data["messages"]] == publishes


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": [{"channel": "c", "message": {"content": 1}}], "extra": 1},
        {"messages": {"channel": "c"}},
        [{"channel": "c", "message": {"content": 1}}],
        {"messages": [{"channel": "c", "message": {"content": 1}}, {"channel": "bad name", "message": {"content": 1}}]},
    ],
)
def test_batches_not_plainly_valid_go_to_the_serializer(body):
    assert plain.batch(body) is None


def test_a_batch_over_the_item_limit_goes_to_the_serializer(realtime):
    realtime(publish_batch_max_items=2)
    item = {"channel": "c", "message": {"content": 1}}
    assert plain.batch({"messages": [item] * 2}) is not None
    assert plain.batch({"messages": [item] * 3}) is None
