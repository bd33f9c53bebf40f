"""The AsyncAPI document of the protocol (`/api/asyncapi/`, streaming/asyncapi.py): made from what
the server validates with, true to the frames the server really sends (in process over WebSocket,
over a real daphne for SSE), accepted by the AsyncAPI project's own parser (Node.js, in
clients/js), and in step with the browser client's type declarations."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from streaming import asyncapi, protocol
from streaming.errors import StreamingError
from streaming.protocol import frames
from tests.support.services import missing

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
VALIDATE = JS / "scripts" / "validate-asyncapi.mjs"
DOCUMENT_URI = "urn:realtime:asyncapi"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi.build(host="testserver")


def validator(document: dict[str, Any], key: str) -> Draft7Validator:
    """A validator of the payload of the document's message `key`, its `$ref`s resolved in the document."""
    registry = Registry().with_resource(DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT7))
    schema = {"$ref": f"{DOCUMENT_URI}#/components/messages/{key}/payload"}
    return Draft7Validator(schema, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)


def channel_messages(document: dict[str, Any], channel: str) -> list[str]:
    return [item["$ref"].rsplit("/", 1)[1] for item in document["channels"][channel]["messages"].values()]


def matching(document: dict[str, Any], frame: Any, keys: list[str]) -> list[str]:
    return [key for key in keys if validator(document, key).is_valid(frame)]


def fixed_type(document: dict[str, Any], key: str) -> str | None:
    """The `type` a message's payload fixes (replies, greeting, heartbeat), None for envelopes."""
    payload = document["components"]["messages"][key]["payload"]
    if "$ref" in payload:
        payload = document["components"]["schemas"][payload["$ref"].rsplit("/", 1)[1]]
    return payload.get("properties", {}).get("type", {}).get("const")


def sent_actions(document: dict[str, Any]) -> set[str]:
    """The actions of the client frames the document describes: the messages of `send` operations."""
    found = set()
    for operation in document["operations"].values():
        if operation["action"] == "send":
            for item in operation["messages"]:
                payload = document["components"]["messages"][item["$ref"].rsplit("/", 1)[1]]["payload"]
                found.add(payload["properties"]["action"]["const"])
    return found


# ---------------------------------------------------------------------------------------------
# Client frames: the schemas are those of the checks parse_frame runs


def test_every_action_has_a_message_with_its_docs_and_replies_and_every_message_an_action(document):
    assert sent_actions(document) == set(protocol.ACTIONS)
    assert set(asyncapi.ACTION_DOCS) == set(protocol.ACTIONS) == set(asyncapi.REPLIES) == set(asyncapi.ACTION_EXAMPLES)
    for action, (_, fields) in asyncapi.ACTION_DOCS.items():
        assert set(fields) <= set(protocol.ACTIONS[action]), action
    for action in protocol.ACTIONS:
        operation = document["operations"][action]
        replies = {item["$ref"].rsplit("/", 1)[1] for item in operation["reply"]["messages"]}
        assert replies == {f"reply.{type_}" for type_ in asyncapi.REPLIES[action]} | {"reply.error"}
        data = document["components"]["messages"][f"action.{action}"]["payload"]["properties"]["data"]
        assert set(data["properties"]) == set(protocol.ACTIONS[action])
        assert set(data.get("required", [])) == {
            key for key, field in protocol.ACTIONS[action].items() if field.required
        }


PROBES: dict[Any, list[Any]] = {
    frames._channel: ["a", "a" * 100, "a" * 101, "", "-a", "a b", "user:42", "x@y.z-1", 5, None],
    frames._offset: [0, 1, frames.OFFSET_MAX, frames.OFFSET_MAX + 1, -1, True, "1", None],
    frames._limit: [0, 1, frames.HISTORY_LIMIT_MAX, frames.HISTORY_LIMIT_MAX + 1, False, "10"],
    frames._message_type: ["text", "a" * 64, "a" * 65, "", "_a", "a.b:c-d", "a b", "a@b", 1],
    frames._epoch: ["", "k3x9q2ab", "a" * 16, "a" * 17, "a-b", 7, None],
    frames._boolean: [True, False, 0, 1, "true", None],
    frames._token: ["x", "x" * frames.TOKEN_MAX, "x" * (frames.TOKEN_MAX + 1), "", 1],
    frames._user_id: ["u1", 42, -7, "a" * 64, "a" * 65, "", "a b", True, None, 1.5],
    frames._message_id: ["m", "a" * protocol.MESSAGE_ID_MAX, "a" * (protocol.MESSAGE_ID_MAX + 1), "", "a\x00b", 3],
    protocol.check_content: [None, 1, "x", [], {"a": [1, {"b": None}]}],
}


def test_every_check_has_a_schema_and_both_accept_the_same_values():
    """Values at the edges of each check: the check and its JSON Schema give the same verdict."""
    used = {field.check for fields in protocol.ACTIONS.values() for field in fields.values()}
    assert used <= set(frames.SCHEMAS) and set(PROBES) == set(frames.SCHEMAS)
    for check, values in PROBES.items():
        schema = Draft7Validator(frames.SCHEMAS[check])
        for value in values:
            try:
                check(value)
                accepted = True
            except (ValueError, StreamingError):
                accepted = False
            assert schema.is_valid(value) == accepted, (check.__name__, value)


FRAMES = [
    {"action": "ping"},
    {"action": "ping", "data": None, "request_id": 7},
    {"action": "ping", "data": {}, "request_id": "a" * protocol.REQUEST_ID_MAX},
    {"action": "ping", "request_id": "a" * (protocol.REQUEST_ID_MAX + 1)},
    {"action": "ping", "request_id": 2**53},
    {"action": "ping", "request_id": True},
    {"action": "ping", "data": {"x": 1}},
    {"action": "ping", "extra": 1},
    {"action": "subscribe", "data": {"channel": "news", "since": 3, "epoch": "k3x9q2ab"}},
    {"action": "subscribe", "data": {"since": 3}},
    {"action": "subscribe"},
    {"action": "subscribe", "data": None},
    {"action": "subscribe", "data": []},
    {"action": "send_to_channel", "data": {"channel": "c", "content": None}},
    {"action": "send_to_channel", "data": {"channel": "c", "content": 1, "persist": True, "id": "m1", "type": "t"}},
    {"action": "send_to_channel", "data": {"channel": "c"}},
    {"action": "send_to_user", "data": {"user_id": 42, "content": {"a": 1}}},
    {"action": "history", "data": {"channel": "c", "limit": 0}},
    {"action": "presence", "data": {"channel": "presence-x", "counts_only": True}},
    {"action": "snapshot", "data": {"channel": "docs:general"}},
    {"action": "refresh", "data": {"token": "x"}},
    {"action": "nope"},
    {"data": {}},
    ["ping"],
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda frame: json.dumps(frame)[:60])
def test_a_frame_is_accepted_by_parse_frame_exactly_when_its_action_message_validates_it(document, frame):
    try:
        protocol.parse_frame(frame)
        accepted = True
    except StreamingError:
        accepted = False
    actions = [f"action.{action}" for action in protocol.ACTIONS]
    assert bool(matching(document, frame, actions)) == accepted


# ---------------------------------------------------------------------------------------------
# What the server sends: the shapes, the examples, and real conversations


def shaped_frames() -> list[tuple[str, dict[str, Any]]]:
    """Frames built by the functions that build them for the wire (`protocol.shapes`)."""
    from streaming.history import Recovery
    from streaming.live import Snapshot

    sender = protocol.sender("u1", protocol.new_id())
    envelope = protocol.envelope(type="text", channel="news", content={"a": [1]}, sender=sender, offset=3)
    anonymous = protocol.envelope(type=protocol.DEFAULT_SERVER_TYPE, channel=None, content="hi", sender=None)
    greeting = protocol.connected(connection_id=protocol.new_id(), user_id=None, heartbeat_interval=0.5)
    full = protocol.connected(connection_id=protocol.new_id(), user_id="u1", heartbeat_interval=30.0)
    protocol.add_server_side(full, ["news", "team:1"], {"private-x": "not granted"}, {"plan": "pro"})
    notification = protocol.notification_content(title="t", content={"b": 1}, level="warning", auto_hide=False,
                                                 duration=5000)  # fmt: skip
    stored = {**notification, "notification_id": 9}  # as the notifications app sends it
    presence = protocol.presence_content(event="leave", user_id=None, connection_id=protocol.new_id())
    history = Recovery("news", 3, [envelope], recovered=True, has_more=True, epoch="k3x9q2ab")
    empty = Recovery("quiet", 0)
    snapshot = Snapshot("docs:general", 4, "k3x9q2ab", [{"id": 1}], has_more=True)
    return [
        ("connected", greeting),
        ("connected", full),
        ("heartbeat", protocol.heartbeat()),
        ("envelope", envelope),
        ("envelope", anonymous),
        ("notification", protocol.envelope(type=protocol.NOTIFICATION, channel="broadcast", content=notification)),
        ("notification", protocol.envelope(type=protocol.NOTIFICATION, channel=None, content=stored)),
        ("presence-event", protocol.envelope(type=protocol.PRESENCE, channel="presence-lobby", content=presence)),
        ("stream-reset", protocol.reply(protocol.RESET_EVENT, {"channel": "news", "epoch": "p8w2m5rt", "offset": 0})),
        ("reply.pong", protocol.reply("pong", {"timestamp": protocol.now_iso()}, 1)),
        ("reply.history", protocol.reply("history", protocol.history_page(history), "r")),
        ("reply.history", protocol.reply("history", protocol.history_page(empty))),
        ("reply.snapshot", protocol.reply("snapshot", protocol.snapshot_page(snapshot), "r")),
        ("reply.error", protocol.error_reply("invalid_message", "Invalid data.", "r", {"channel": "required"})),
        ("reply.error", protocol.error_reply("rate_limited", "Slow down.")),
        ("reply.unsubscribed", protocol.reply("unsubscribed", {"channel": "private-x", "reason": "not granted"})),
    ]


@pytest.mark.parametrize(("key", "frame"), shaped_frames(), ids=lambda item: item if isinstance(item, str) else "")
def test_frames_built_by_the_shapes_validate_against_their_message(document, key, frame):
    validator(document, key).validate(frame)


def test_a_frame_with_a_field_the_document_does_not_know_does_not_validate(document):
    assert not validator(document, "heartbeat").is_valid({**protocol.heartbeat(), "extra": 1})
    assert not validator(document, "envelope").is_valid({**protocol.envelope(type="t", channel="c", content=1), "x": 1})
    assert not validator(document, "reply.error").is_valid(protocol.error_reply("no_such_code", "?"))


def test_every_message_has_an_example_that_validates_and_the_server_accepts_those_of_client_frames(document):
    for key, message in document["components"]["messages"].items():
        assert message.get("examples"), key
        for example in message["examples"]:
            validator(document, key).validate(example["payload"])
            if key.startswith("action."):
                protocol.parse_frame(example["payload"])


def test_close_codes_error_codes_and_stream_error_conditions_are_all_documented(document):
    from streaming import errors
    from streaming.sse import CONDITIONS

    codes = {item["code"] for item in document["channels"][asyncapi.WS]["x-close-codes"]}
    assert {int(code) for code in protocol.CloseCode} <= codes
    assert set(asyncapi.STREAM_ERRORS) == set(CONDITIONS.values()) | {"closed"}
    described = set(document["components"]["schemas"]["ErrorBody"]["properties"]["type"]["enum"])
    assert described == {cls.code for cls in vars(errors).values() if isinstance(cls, type) and hasattr(cls, "code")}


async def receive_all(communicator, until_request_id: Any = None, timeout: float = 3) -> list[dict]:
    """Frames until the one carrying `until_request_id`, or (None) until nothing more comes."""
    received = []
    while True:
        if until_request_id is None and await communicator.receive_nothing(timeout=0.3):
            return received
        frame = await communicator.receive_json_from(timeout=timeout)
        received.append(frame)
        if until_request_id is not None and frame.get("request_id") == until_request_id:
            return received


@pytest.mark.django_db(transaction=True)
async def test_every_frame_a_websocket_conversation_receives_matches_a_message_of_the_document(
    connect, realtime, document
):
    """Every action, with its replies and the envelopes, resets, heartbeats and errors they bring."""
    from asgiref.sync import sync_to_async

    from examples.documents.models import Document
    from streaming import services
    from streaming.auth import authenticator

    realtime(websocket_heartbeat_interval=0.5, websocket_disconnect_timeout=0)
    granted = authenticator.create_access_token({"sub": "u1", "channels": ["presence-*"]})
    client = await connect(f"token={granted}")
    received = [client.greeting]
    document_row = await sync_to_async(Document.objects.create)(title="v1")

    async def call(action: str, data: Any = None, request_id: Any = None) -> None:
        frame: dict[str, Any] = {"action": action, "request_id": request_id or f"{action}-{len(received)}"}
        if data is not None:
            frame["data"] = data
        await client.send_json_to(frame)
        received.extend(await receive_all(client, frame["request_id"]))

    await call("ping")
    await call("send_to_channel", {"channel": "news", "content": {"n": 1}, "persist": True, "id": "m-1"})
    await call("subscribe", {"channel": "news", "since": 0})
    await call("send_to_channel", {"channel": "news", "content": "live", "type": "chat.line"})
    await call("send_to_user", {"user_id": "u1", "content": [1, 2]})
    await call("message", {"content": {"hello": True}})
    await call("history", {"channel": "news", "limit": 10})
    await call("subscribe", {"channel": "presence-lobby"})
    await call("presence", {"channel": "presence-lobby"})
    await call("presence", {"channel": "news", "counts_only": True})
    await call("snapshot", {"channel": f"doc:{document_row.pk}"})
    await call("subscribe", {"channel": f"doc:{document_row.pk}"})
    document_row.title = "v2"
    await sync_to_async(document_row.save)()
    await call("unsubscribe", {"channel": "news"})
    await call("subscribe", {"channel": "resettable"})
    await call("send_to_channel", {"channel": "resettable", "content": 1, "persist": True})  # it has an epoch
    await sync_to_async(services.history_reset)("resettable")
    await call("refresh", {"token": authenticator.create_access_token({"sub": "u1"})})  # presence-lobby is left
    await call("subscribe", {"channel": "bad channel"})
    await call("nope")
    await call("history", {"channel": "news", "limit": 0})
    await client.send_to(text_data="{not json")
    await client.send_json_to({"action": "ping", "data": {"x": 1}})
    await client.send_json_to({"action": "pong"})
    received.extend(await receive_all(client))
    while not any(frame.get("type") == "heartbeat" for frame in received):
        received.append(await client.receive_json_from(timeout=3))
    await client.disconnect()

    keys = [key for key in channel_messages(document, asyncapi.WS) if not key.startswith("action.")]
    covered = set()
    for frame in received:
        matched = matching(document, frame, keys)
        assert matched, f"no message of the document describes {frame}"
        covered.update(matched)
    replies = {f"reply.{type_}" for types in asyncapi.REPLIES.values() for type_ in types} | {"reply.error"}
    assert replies | {"connected", "heartbeat", "stream-reset", "envelope", "presence-event", "model-change"} <= covered
    assert {frame["type"] for frame in received} >= {"chat.line", "text", "message", "updated", "presence"}


@pytest.mark.server
async def test_every_event_of_a_real_sse_stream_matches_a_message_of_the_document(live_server_factory, document):
    import httpx

    from tests.support.clients import SSEReader
    from tests.support.server import ADMIN_HEADERS

    server = live_server_factory(SSE_HEARTBEAT_INTERVAL="1")
    async with httpx.AsyncClient(base_url=server.http, headers=ADMIN_HEADERS) as http:
        for n in range(2):
            body = {"channel": "news", "message": {"content": n}, "persist": True}
            assert (await http.post("/ws/send-to-channel", json=body)).status_code == 202
        async with SSEReader(server.http + "/sse/connect?channels=news", headers={"Last-Event-ID": "news:1"}) as stream:
            events: list[dict] = []

            async def until(name: str) -> dict:
                while True:
                    events.append(await stream.next_event(timeout=5, skip=()))
                    if events[-1]["event"] == name:
                        return events[-1]

            connection_id = (await until("connected"))["data"]["data"]["connection_id"]
            await until("stream-open")  # after the replay of offset 2
            notification = {"title": "t", "content": "c", "type": "info", "channel": "news"}
            assert (await http.post("/sse/notification", json=notification)).status_code == 202
            await until("notification")
            assert (await http.delete("/api/channels/news/history/")).status_code == 200
            await until("stream-reset")
            await until("heartbeat")
            assert (await http.delete(f"/ws/connections/{connection_id}")).status_code == 204
            await until("stream-error")
    keys = channel_messages(document, asyncapi.SSE)
    messages = document["components"]["messages"]
    names = set()
    for event in events:
        matched = matching(document, event["data"], keys)
        assert matched, f"no message of the document describes {event}"
        # the event name is the one the message gives, or the envelope's type
        assert any(event["event"] == messages[key]["x-sse-event"] or event["data"].get("type") == event["event"]
                   for key in matched), event  # fmt: skip
        names.add(event["event"])
    assert names >= {"connected", "stream-open", "stream-reset", "heartbeat", "stream-error", "message", "notification"}


# ---------------------------------------------------------------------------------------------
# Served at /api/asyncapi/


@pytest.mark.django_db
def test_served_as_json_for_anyone_with_the_request_host(client, settings):
    response = client.get("/api/asyncapi/", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    served = response.json()
    assert served["asyncapi"] == "3.0.0"
    assert served["info"]["version"] == settings.SPECTACULAR_SETTINGS["VERSION"]
    assert served["servers"]["websocket"]["host"] == "testserver"
    assert served["servers"]["websocket"]["protocol"] == "ws" and served["servers"]["http"]["protocol"] == "http"
    assert {channel["address"] for channel in served["channels"].values()} == {"/ws/connect", "/sse/connect"}
    secure = client.get("/api/asyncapi/", secure=True).json()
    assert (secure["servers"]["websocket"]["protocol"], secure["servers"]["http"]["protocol"]) == ("wss", "https")
    assert client.get("/api/").json()["asyncapi"] == "http://testserver/api/asyncapi/"
    assert b'href="/api/asyncapi/"' in client.get("/").content


# ---------------------------------------------------------------------------------------------
# The AsyncAPI project's parser


def parse(document: dict[str, Any], tmp_path: Path) -> tuple[int, list[dict[str, str]]]:
    """Run @asyncapi/parser (clients/js) on the document: its exit status and diagnostics."""
    node = shutil.which("node")
    if node is None:
        missing("Node.js is not installed (the AsyncAPI parser runs on it)")
    if not (JS / "node_modules" / "@asyncapi" / "parser").is_dir():
        missing("@asyncapi/parser is not installed: run `npm ci` in clients/js")
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(document))
    done = subprocess.run([node, str(VALIDATE), str(path)], cwd=JS, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_the_asyncapi_parser_accepts_the_document_without_errors_or_warnings(document, tmp_path):
    status, diagnostics = parse(document, tmp_path)
    assert status == 0, diagnostics
    assert [d for d in diagnostics if d["severity"] in ("error", "warning")] == []


def _operation_message_of_another_channel(document: dict[str, Any]) -> None:
    document["operations"]["ping"]["messages"] = [{"$ref": f"#/channels/{asyncapi.SSE}/messages/heartbeat"}]


def _dangling_reply(document: dict[str, Any]) -> None:
    document["operations"]["subscribe"]["reply"]["messages"].append({"$ref": f"#/channels/{asyncapi.WS}/messages/x"})


def _asyncapi_2_verb(document: dict[str, Any]) -> None:
    document["operations"]["history"]["action"] = "publish"


def _bad_schema(document: dict[str, Any]) -> None:
    document["components"]["schemas"]["Envelope"]["properties"]["offset"]["type"] = "int"


@pytest.mark.parametrize(
    "breaking", [_operation_message_of_another_channel, _dangling_reply, _asyncapi_2_verb, _bad_schema]
)
def test_the_asyncapi_parser_refuses_a_broken_document(document, tmp_path, breaking):
    broken = copy.deepcopy(document)
    breaking(broken)
    status, diagnostics = parse(broken, tmp_path)
    assert status == 1
    assert any(d["severity"] == "error" for d in diagnostics), diagnostics


# ---------------------------------------------------------------------------------------------
# The browser client's type declarations


def typedef_union(name: str) -> set[str]:
    """The string literals of a JSDoc `@typedef {"a" | "b"} Name` of the browser client's sources."""
    text = "\n".join(path.read_text() for path in sorted((JS / "src").glob("*.js")))
    comments = re.sub(r"^\s*\*\s?", "", text, flags=re.MULTILINE)  # JSDoc continuation lines joined up
    found = re.search(r"@typedef\s*\{([^{}]*)\}\s*" + re.escape(name) + r"\b", comments)
    assert found, f"clients/js/src declares no typedef {name}"
    return set(re.findall(r'"([^"]+)"', found.group(1)))


def test_the_browser_client_declares_the_same_actions_and_frame_types_as_the_document(document):
    ws = [key for key in channel_messages(document, asyncapi.WS) if not key.startswith("action.")]
    sse = [key for key in channel_messages(document, asyncapi.SSE) if key.startswith("sse.") or key == "heartbeat"]
    frame_types = {fixed_type(document, key) for key in ws} - {None}
    messages = document["components"]["messages"]
    assert typedef_union("ClientAction") == sent_actions(document)
    assert typedef_union("ServerFrameType") == frame_types
    assert typedef_union("StreamEventName") == {messages[key]["x-sse-event"] for key in sse}
