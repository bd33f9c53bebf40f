"""Input fuzzing of `/ws/connect` against a real daphne: hypothesis-generated frames, and a
state machine of subscribe/unsubscribe/publish checked against the server after every step.

Every frame must get exactly the reply the README ("WebSocket protocol") promises — a typed error from the documented set
(never `internal_error`, never a closed connection) or, for a valid frame, the action's reply —
while 50 other connections stay open and the process stays up. The oracle below is written from
the README, not from `streaming.protocol`, so that the product is checked against the contract.

The fuzzed server runs with CLIENT_RATE_LIMIT=0 (10,000 frames in a minute would otherwise be
rate-limited, which tests/streaming/test_ratelimit.py covers) and WEBSOCKET_MAX_MESSAGE_SIZE=262144,
so that nesting to 100,000 levels is parsed rather than refused for its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from dataclasses import dataclass

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from websockets.sync.client import connect as ws_connect

from tests.support.server import ADMIN_HEADERS

pytestmark = pytest.mark.server

LIMIT = 262_144  # WEBSOCKET_MAX_MESSAGE_SIZE of the fuzzed server
MAX_DEPTH = 1024  # JSON nesting the server parses (README: deeper is invalid_json)
CONTENT_DEPTH = 200  # nesting of a message's content (README: deeper is invalid_message)
ERROR_CODES = {
    "invalid_json",
    "invalid_message",
    "unknown_action",
    "invalid_channel",
    "forbidden",
    "message_too_large",
    "rate_limited",
    "too_many_subscriptions",
    "unavailable",
    "unauthenticated",
}  # fmt: skip; `internal_error` is deliberately not here: it means a bug
SUBSCRIBABLE = [f"fuzz-{n}" for n in range(5)]  # few names, so subscriptions stay under the cap


@pytest.fixture(scope="module")
def fuzz_server(live_server_factory):
    return live_server_factory(
        CLIENT_RATE_LIMIT="0", WEBSOCKET_MAX_MESSAGE_SIZE=str(LIMIT), WEBSOCKET_HEARTBEAT_INTERVAL="5"
    )


# ---------------------------------------------------------------------------------------------
# Generated frames, each with the outcomes the README allows


@dataclass(frozen=True)
class Case:
    kind: str
    frame: str | bytes
    outcomes: frozenset[str]  # "pong", "ack", "error:invalid_json", "" (no reply), ...
    request_id: object = None  # a usable request_id the replies must carry back


def usable_request_id(value: object) -> bool:
    """README, "WebSocket protocol": a request_id is a string (at most 128 characters here) or an integer."""
    if isinstance(value, str):
        return len(value) <= 128
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53


def case(kind: str, payload: object, *outcomes: str) -> Case:
    """A frame and its allowed outcomes; a frame over the size limit is refused before anything:
    the server closes the connection with 1009 (README, WEBSOCKET_MAX_MESSAGE_SIZE)."""
    frame = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    if len(frame.encode("utf-8", "surrogatepass")) > LIMIT:
        return Case(kind, frame, frozenset({"closed:1009"}))
    request_id = payload.get("request_id") if isinstance(payload, dict) else None
    return Case(kind, frame, frozenset(outcomes), request_id if usable_request_id(request_id) else None)


plain_channels = st.from_regex(r"[a-oq-tv-z0-9][A-Za-z0-9_.@-]{0,40}", fullmatch=True).filter(
    lambda name: name != "broadcast"
)  # never private-/presence-/user: (they need grants) nor broadcast (server only)
request_ids = st.text(max_size=20) | st.integers(-(2**53) + 1, 2**53 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
contents = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)  # fmt: skip
SERVER_TYPES = {
    "ack",
    "connected",
    "error",
    "heartbeat",
    "history",
    "pong",
    "presence",
    "refreshed",
    "subscribed",
    "unsubscribed",
    "notification",
}  # fmt: skip; README: types the server uses for itself cannot be published by clients
message_types = st.from_regex(r"[a-z][a-z0-9_.:-]{0,20}", fullmatch=True).filter(lambda t: t not in SERVER_TYPES)

# action → (valid data strategy, the reply of a valid frame from an anonymous connection)
VALID: dict[str, tuple[st.SearchStrategy, str]] = {
    "ping": (st.just({}), "pong"),
    "pong": (st.just({}), ""),
    "subscribe": (st.fixed_dictionaries({"channel": st.sampled_from(SUBSCRIBABLE)}), "subscribed"),
    "unsubscribe": (st.fixed_dictionaries({"channel": plain_channels}), "unsubscribed"),
    "send_to_channel": (
        st.fixed_dictionaries(
            {"channel": plain_channels, "content": contents},
            optional={"type": message_types, "persist": st.booleans()},
        ),
        "ack",
    ),
    "send_to_user": (
        st.fixed_dictionaries(
            {"user_id": st.from_regex(r"[A-Za-z0-9_.:@-]{1,64}", fullmatch=True), "content": contents}
        ),
        "ack",
    ),
    "message": (st.fixed_dictionaries({"content": contents}), "ack"),
    "history": (
        st.fixed_dictionaries(
            {"channel": plain_channels},
            optional={"since": st.integers(0, 2**63 - 1), "limit": st.integers(1, 1000)},
        ),
        "history",
    ),
    "presence": (st.fixed_dictionaries({"channel": plain_channels}), "presence"),
    "refresh": (st.fixed_dictionaries({"token": st.text(min_size=1, max_size=50)}), "error:forbidden"),
}
# README, "WebSocket protocol": the fields of each action's data (besides `content`, which may be anything), and
# which are required.
FIELDS = {
    "ping": [], "pong": [], "message": [], "unsubscribe": ["channel"], "presence": ["channel"],
    "subscribe": ["channel", "since"], "send_to_channel": ["channel", "type", "persist"],
    "send_to_user": ["user_id", "type"], "history": ["channel", "since", "limit"], "refresh": ["token"],
}  # fmt: skip
REQUIRED = {
    "unsubscribe": ["channel"], "presence": ["channel"], "subscribe": ["channel"], "history": ["channel"],
    "send_to_channel": ["channel", "content"], "send_to_user": ["user_id", "content"], "message": ["content"],
    "refresh": ["token"],
}  # fmt: skip
# field → values of the wrong type or shape (README: "Channels", "WebSocket protocol"), and the error they must get
WRONG: dict[str, tuple[st.SearchStrategy, str]] = {
    "channel": (
        st.none() | st.booleans() | st.integers() | finite | st.lists(st.text(), max_size=2)
        | st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2) | st.just("")
        | st.just("-starts-badly") | st.just("x" * 101) | st.text(min_size=1).filter(lambda t: " " in t or "/" in t),
        "invalid_channel",
    ),
    "since": (st.text() | finite | st.booleans() | st.none() | st.integers(max_value=-1) | st.just(2**63), "invalid_message"),
    "limit": (st.integers(max_value=0) | st.integers(min_value=1001) | st.text() | finite | st.booleans(), "invalid_message"),
    "type": (st.integers() | st.none() | st.just("") | st.just("has space") | st.just("x" * 65) | st.lists(st.text()), "invalid_message"),
    "persist": (st.integers() | st.text() | st.none() | st.lists(st.booleans()), "invalid_message"),
    "user_id": (finite | st.booleans() | st.none() | st.just("") | st.just("a b") | st.just("x" * 65) | st.lists(st.text()), "invalid_message"),
    "token": (st.integers() | st.none() | st.just("") | st.just("x" * 8193) | st.lists(st.text()), "invalid_message"),
}  # fmt: skip


@st.composite
def valid_frames(draw) -> Case:
    action = draw(st.sampled_from(sorted(VALID)))
    data_strategy, reply = VALID[action]
    frame = {"action": action, "data": draw(data_strategy)}
    if draw(st.booleans()):
        frame["request_id"] = draw(request_ids)
    return case("valid", frame, reply)


@st.composite
def wrong_fields(draw) -> Case:
    """A valid frame of any action with one fault in its data: a field of the wrong type or
    shape, a required field missing, or a field the action does not have."""
    action = draw(st.sampled_from(sorted(VALID)))
    data = dict(draw(VALID[action][0]))
    faults = ["unknown"] + (["wrong"] if FIELDS[action] else []) + (["missing"] if action in REQUIRED else [])
    fault = draw(st.sampled_from(faults))
    code = "invalid_message"
    if fault == "wrong":
        name = draw(st.sampled_from(FIELDS[action]))
        strategy, code = WRONG[name]
        data[name] = draw(strategy)
    elif fault == "missing":
        del data[draw(st.sampled_from(REQUIRED[action]))]
    else:
        data[draw(st.text(min_size=1, max_size=10).filter(lambda key: key not in [*FIELDS[action], "content"]))] = 1
    return case("wrong-field", {"action": action, "data": data, "request_id": draw(request_ids)}, f"error:{code}")


@st.composite
def wrong_envelopes(draw) -> Case:
    """The frame itself is wrong: not an object, action, data or request_id of the wrong type,
    an unknown action, an unknown top-level key."""
    which = draw(st.sampled_from(["not-object", "action", "unknown-action", "data", "request_id", "extra-key"]))
    if which == "not-object":
        value = draw(st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text() | st.lists(st.integers()))
        return case(which, json.dumps(value), "error:invalid_message")
    frame: dict = {"action": "ping", "data": {}}
    code = "invalid_message"
    if which == "action":
        frame["action"] = draw(st.none() | st.integers() | st.lists(st.text()) | st.dictionaries(st.text(), st.text()))
    elif which == "unknown-action":
        frame["action"] = draw(st.text(max_size=80).filter(lambda a: a not in VALID))
        code = "unknown_action"
    elif which == "data":
        frame["data"] = draw(st.booleans() | st.integers() | st.text() | st.lists(st.integers()))
    elif which == "request_id":
        frame["request_id"] = draw(
            st.booleans() | finite | st.just(2**53) | st.text(min_size=129, max_size=200) | st.lists(st.text())
        )
        return Case(which, json.dumps(frame), frozenset({"error:invalid_message"}))
    else:
        frame[draw(st.text(max_size=10).filter(lambda k: k not in ("action", "data", "request_id")))] = 1
    frame["request_id"] = draw(st.text(max_size=10))
    return case(which, frame, f"error:{code}")


NOT_JSON = [
    '{"action": "ping"', "[1,2", "{'action': 'ping'}", '{"action":"ping",}', "NaN", "Infinity", '{"a": NaN}',
    "", " ", '"unterminated', '{"a":\x01}', "tru", "01", "1.", '{"a" 1}',
]  # fmt: skip


@st.composite
def bad_json(draw) -> Case:
    text = draw(st.sampled_from(NOT_JSON) | st.text(max_size=200))
    try:
        value = json.loads(text)
    except ValueError:
        return Case("bad-json", text, frozenset({"error:invalid_json"}))
    # Random text that is a real frame (it happened: `{"action":"pong"}`) is not bad input.
    assume(not (isinstance(value, dict) and value.get("action") in VALID))
    # Python's json accepts it; the server may still refuse NaN/Infinity as invalid JSON.
    return Case(
        "json-not-frame", text, frozenset({"error:invalid_json", "error:invalid_message", "error:unknown_action"})
    )


@st.composite
def binary_frames(draw) -> Case:
    payload = draw(st.binary(max_size=2000) | st.just(b'{"action": "ping"}'))
    return Case("binary", payload, frozenset({"error:invalid_message"}))


@st.composite
def deep_nesting(draw) -> Case:
    depth = draw(st.integers(1, 1100) | st.integers(1025, 100_000))
    shape = draw(st.sampled_from(["open", "balanced", "objects", "in-content"]))
    if shape == "open":
        return case("nesting", "[" * depth, "error:invalid_json")
    if shape == "balanced":
        return case(
            "nesting", "[" * depth + "]" * depth, "error:invalid_json" if depth > MAX_DEPTH else "error:invalid_message"
        )
    if shape == "objects":
        text = '{"a":' * depth + "1" + "}" * depth
        return case("nesting", text, "error:invalid_json" if depth > MAX_DEPTH else "error:invalid_message")
    return nested_content(depth)


def nested_content(depth: int) -> Case:
    """A publish whose content is `depth` lists deep (the frame and its data add two levels)."""
    text = '{"action":"send_to_channel","data":{"channel":"deep","content":' + "[" * depth + "]" * depth + "}}"
    if depth + 2 > MAX_DEPTH:
        return case("nesting", text, "error:invalid_json")
    return case("nesting", text, "error:invalid_message" if depth > CONTENT_DEPTH else "ack")


@st.composite
def big_numbers(draw) -> Case:
    digits = draw(st.integers(400, 5000))
    number = draw(st.sampled_from(["1", "-9"])) + "7" * (digits - 1)
    number += draw(st.sampled_from(["", ".5", "e10"]))
    where = draw(st.sampled_from(["content", "request_id", "since", "top"]))
    if where == "top":
        return case("big-number", number, "error:invalid_json")
    if where == "request_id":
        return case("big-number", '{"action":"ping","request_id":' + number + "}", "error:invalid_json")
    if where == "since":
        return case(
            "big-number", '{"action":"history","data":{"channel":"n","since":' + number + "}}", "error:invalid_json"
        )
    return case("big-number", '{"action":"message","data":{"content":' + number + "}}", "error:invalid_json")


@st.composite
def lone_surrogates(draw) -> Case:
    escape = draw(st.sampled_from(["\\ud800", "\\udfff", "\\udbff\\u0041", "\\ud83d"]))
    where = draw(st.sampled_from(["content", "channel", "action", "request_id"]))
    templates = {
        "content": '{"action":"message","data":{"content":"x%sy"}}',
        "channel": '{"action":"subscribe","data":{"channel":"c%s"}}',
        "action": '{"action":"pi%sng"}',
        "request_id": '{"action":"ping","request_id":"r%s"}',
    }
    return case("surrogate", templates[where] % escape, "error:invalid_json")


@st.composite
def huge_strings(draw) -> Case:
    size = draw(st.integers(1000, 900_000))
    blob = draw(st.sampled_from(["x", "ж", "😀", "\\n"])) * (size // 4)
    where = draw(st.sampled_from(["content", "content", "channel", "request_id", "action"]))
    if where == "content":
        return case("huge", {"action": "message", "data": {"content": blob}}, "ack")
    if where == "channel":
        return case("huge", {"action": "subscribe", "data": {"channel": blob}}, "error:invalid_channel")
    if where == "request_id":
        return case("huge", {"action": "ping", "request_id": blob}, "error:invalid_message")
    return case("huge", {"action": blob}, "error:unknown_action")


frames = st.one_of(
    valid_frames(),
    wrong_fields(),
    wrong_envelopes(),
    bad_json(),
    binary_frames(),
    deep_nesting(),
    big_numbers(),
    lone_surrogates(),
    huge_strings(),
)


# ---------------------------------------------------------------------------------------------
# Talking to the server


def is_delivery(frame: dict) -> bool:
    """An envelope (a message on a channel, or the echo of `message`), not a reply."""
    return "timestamp" in frame and "sender" in frame


class Closed(Exception):
    """The server closed the fuzzing connection."""


def exchange(socket, frame: str | bytes, sentinel: int) -> list[dict]:
    """Send a frame, then a ping; return every reply that came before the ping's pong."""
    try:
        return _exchange(socket, frame, sentinel)
    except websockets.ConnectionClosed as closed:
        raise Closed(closed.rcvd.code if closed.rcvd else None) from None


def _exchange(socket, frame: str | bytes, sentinel: int) -> list[dict]:
    socket.send(frame)
    socket.send(json.dumps({"action": "ping", "request_id": f"sentinel-{sentinel}"}))
    replies = []
    while True:
        reply = json.loads(socket.recv(10))
        if reply.get("request_id") == f"sentinel-{sentinel}" and reply["type"] == "pong":
            return replies
        if reply.get("type") != "heartbeat" and not is_delivery(reply):
            replies.append(reply)


def outcome(replies: list[dict]) -> str:
    return ",".join(f"error:{r['content']['type']}" if r["type"] == "error" else r["type"] for r in replies)


class Bystanders:
    """Connections that only keep themselves alive while the fuzzing goes on next to them."""

    def __init__(self, url: str, count: int) -> None:
        self.url, self.count = url, count
        self.dropped: list[str] = []
        self.alive = 0
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    def __enter__(self) -> Bystanders:
        self.thread.start()
        assert self.ready.wait(30), "bystanders did not connect"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)

    async def _main(self) -> None:
        self.stopping = asyncio.Event()
        sockets = []
        for _ in range(self.count):
            socket = await websockets.connect(self.url)
            await socket.recv()
            sockets.append(socket)
        self.ready.set()
        await asyncio.gather(*(self._keep(socket) for socket in sockets))

    async def _keep(self, socket) -> None:
        try:
            while not self.stopping.is_set():
                await socket.send('{"action": "ping", "request_id": "alive"}')
                while json.loads(await asyncio.wait_for(socket.recv(), 10)).get("request_id") != "alive":
                    pass
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 2)
            self.alive += 1
        except Exception as error:  # any failure of a bystander is what this test looks for
            self.dropped.append(repr(error))
        finally:
            await socket.close()


@pytest.mark.parametrize(
    "examples, bystanders",
    [pytest.param(300, 10, id="fast"), pytest.param(10_000, 50, id="full", marks=pytest.mark.reliability)],
)
@pytest.mark.timeout(1800)
def test_every_fuzzed_frame_gets_its_typed_reply_and_nobody_else_notices(fuzz_server, examples, bystanders, figure):
    seen: dict[str, int] = {}
    wrong: list[tuple[Case, str]] = []

    def fresh_socket():
        socket = ws_connect(fuzz_server.ws + "/ws/connect", max_size=None, close_timeout=1)
        socket.recv(5)  # greeting
        return socket

    sockets = [fresh_socket()]
    with Bystanders(fuzz_server.ws + "/ws/connect", bystanders) as others:

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(frames)
        @example(nested_content(CONTENT_DEPTH))  # the boundaries, every run
        @example(nested_content(CONTENT_DEPTH + 1))
        @example(nested_content(MAX_DEPTH - 2))
        @example(nested_content(MAX_DEPTH - 1))
        @example(case("nesting", "[" * 100_000, "error:invalid_json"))
        def fuzz(generated: Case) -> None:
            number = sum(seen.values())
            try:
                replies = exchange(sockets[-1], generated.frame, number)
                got = outcome(replies)
            except Closed as closed:  # a frame over the limit: the next frame goes on a new connection
                replies, got = [], f"closed:{closed.args[0]}"
                sockets.append(fresh_socket())
            seen[generated.kind] = seen.get(generated.kind, 0) + 1
            if got not in generated.outcomes or any(
                generated.request_id is not None and r.get("request_id") != generated.request_id for r in replies
            ):
                wrong.append((generated, got))
            assert got in generated.outcomes, f"{generated.kind}: expected {set(generated.outcomes)}, got {got!r}"
            for reply in replies:
                if reply["type"] == "error":
                    assert reply["content"]["type"] in ERROR_CODES, reply
                if generated.request_id is not None:
                    assert reply.get("request_id") == generated.request_id, reply

        fuzz()
    for socket in sockets:
        socket.close()
    total = sum(seen.values())
    figure(frames=total, by_kind=dict(sorted(seen.items())), wrong_replies=len(wrong),
           bystanders=bystanders, bystanders_dropped=len(others.dropped))  # fmt: skip
    assert not others.dropped, others.dropped
    assert others.alive == bystanders
    assert fuzz_server.process.poll() is None
    assert httpx.get(fuzz_server.http + "/api/").status_code == 200
    assert total >= examples * 0.9


# ---------------------------------------------------------------------------------------------
# The state machine: what the server holds matches a model after every step


@pytest.mark.parametrize(
    "examples, steps",
    [pytest.param(15, 20, id="fast"), pytest.param(200, 40, id="full", marks=pytest.mark.reliability)],
)
@pytest.mark.timeout(1800)
def test_subscriptions_match_a_model_after_every_step(fuzz_server, examples, steps, figure):
    checked_steps = 0

    class Subscriptions(RuleBasedStateMachine):
        """One connection subscribes and unsubscribes; another publishes. After every step the
        registry lists exactly the modelled channels, and a probe published on every channel
        reaches the connection exactly on the modelled ones (a marker on a control channel,
        published after the probes, orders the check without sleeping)."""

        def __init__(self) -> None:
            super().__init__()
            prefix = uuid.uuid4().hex[:8]
            self.names = [f"sm-{prefix}-{n}" for n in range(4)]
            self.control = f"sm-{prefix}-control"
            self.model: set[str] = set()
            self.resources = contextlib.ExitStack()
            self.socket = self.resources.enter_context(ws_connect(fuzz_server.ws + "/ws/connect", close_timeout=1))
            self.connection_id = json.loads(self.socket.recv(5))["data"]["connection_id"]
            self.publisher = self.resources.enter_context(ws_connect(fuzz_server.ws + "/ws/connect", close_timeout=1))
            self.publisher.recv(5)
            self.http = self.resources.enter_context(httpx.Client(base_url=fuzz_server.http, timeout=10))
            self.call(self.socket, "subscribe", {"channel": self.control})

        def teardown(self) -> None:
            self.resources.close()

        def call(self, socket, action: str, data: dict) -> dict:
            request_id = uuid.uuid4().hex
            socket.send(json.dumps({"action": action, "data": data, "request_id": request_id}))
            while True:
                frame = json.loads(socket.recv(10))
                if frame.get("request_id") == request_id:
                    return frame

        @rule(index=st.integers(0, 3))
        def subscribe(self, index: int) -> None:
            reply = self.call(self.socket, "subscribe", {"channel": self.names[index]})
            assert reply["type"] == "subscribed", reply
            self.model.add(self.names[index])

        @rule(index=st.integers(0, 3))
        def unsubscribe(self, index: int) -> None:
            reply = self.call(self.socket, "unsubscribe", {"channel": self.names[index]})
            assert reply["type"] == "unsubscribed", reply
            self.model.discard(self.names[index])

        @rule(index=st.integers(0, 3), persist=st.booleans())
        def publish(self, index: int, persist: bool) -> None:
            data = {"channel": self.names[index], "content": "publish", "persist": persist}
            assert self.call(self.publisher, "send_to_channel", data)["type"] == "ack"

        @invariant()
        def server_matches_model(self) -> None:
            nonlocal checked_steps
            listed = self.http.get(f"/ws/connections/{self.connection_id}", headers=ADMIN_HEADERS).json()
            assert set(listed["channels"]) - {self.control} == self.model
            probe = uuid.uuid4().hex
            for name in self.names:
                self.call(self.publisher, "send_to_channel", {"channel": name, "content": probe})
            self.call(self.publisher, "send_to_channel", {"channel": self.control, "content": probe})
            reached = set()
            while True:
                frame = json.loads(self.socket.recv(10))
                if frame.get("content") == probe:
                    if frame["channel"] == self.control:
                        break
                    reached.add(frame["channel"])
            assert reached == self.model
            checked_steps += 1

    run_state_machine_as_test(
        Subscriptions,
        settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )  # fmt: skip
    figure(state_machine_runs=examples, steps_checked=checked_steps)
    assert checked_steps >= examples  # the invariant ran (and asserted) after every step
