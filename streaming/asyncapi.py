"""The WebSocket and SSE protocol as an AsyncAPI 3.0 document, served at `/api/asyncapi/`.

Made from what the server works with, so that it cannot drift from it: the client frames from
`protocol.ACTIONS` (each field's JSON Schema sits beside its check, `protocol.frame_schema`), the
names, patterns and limits from `protocol.names`, the close codes from `CloseCode`, the error
codes from `streaming.errors`. The frames the server sends are built in `protocol.shapes`; their
JSON Schemas are here, and tests validate frames those functions build against them, and the
whole document with the AsyncAPI project's own parser (tests/streaming/test_asyncapi.py).

The operations are a client's: `send` is what a client sends to the server, `receive` what the
server sends to it. Each action is an operation whose `reply` lists the replies it may get.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from streaming import errors, protocol
from streaming.live import EVENTS as MODEL_EVENTS
from streaming.protocol import CloseCode
from streaming.protocol.frames import CHANNEL_SCHEMA, EPOCH_SCHEMA, HISTORY_LIMIT_MAX, OFFSET_MAX, REQUEST_ID_SCHEMA
from streaming.selectors import PRESENCE_USERS_MAX

ASYNCAPI_VERSION = "3.0.0"
WS = "wsConnect"
SSE = "sseConnect"
REQUEST_ID = "#/components/correlationIds/requestId"

# What each action does, and what its fields mean; the schemas come from ACTIONS.
ACTION_DOCS: dict[str, tuple[str, dict[str, str]]] = {
    "ping": ("Ask for a `pong`: a round trip.", {}),
    "pong": ("Answer a `heartbeat`. Any frame counts as life; this one is the usual answer.", {}),
    "subscribe": (
        "Join a channel. The `subscribed` reply comes first, then (with `since`) the retained messages "
        "after that offset, then live ones.",
        {
            "channel": "The channel to join.",
            "since": "Resume after this offset: the retained messages after it are sent before live ones.",
            "epoch": "The epoch of `since`: a position of another epoch (the history was reset) is not recovered.",
        },
    ),
    "unsubscribe": ("Leave a channel (`broadcast` and the personal channel cannot be left).", {}),
    "send_to_channel": (
        "Publish to a channel; answered with `ack`.",
        {
            "content": "The message, any JSON.",
            "type": f"The envelope's type (default `{protocol.DEFAULT_CLIENT_TYPE}`); types the server uses for "
            "itself are refused to non-admin clients.",
            "persist": "Store it in the channel's history: the ack and the envelope carry its offset.",
            "id": "An idempotency key: a repeat within PUBLISH_IDEMPOTENCY_WINDOW gets the first ack and is "
            "not published again.",
        },
    ),
    "send_to_user": (
        "Send to every connection of a user, on both transports; answered with `ack`.",
        {"user_id": "The user.", "type": f"The envelope's type (default `{protocol.DEFAULT_CLIENT_TYPE}`)."},
    ),
    "message": (
        "Echoed to all the sender's own connections; fires the server's `client_message` signal. Answered with `ack`.",
        {},
    ),
    "history": (
        "A page of the channel's retained history, oldest first.",
        {
            "since": "Messages after this offset.",
            "limit": "At most this many messages.",
            "epoch": "The epoch of `since`: a `since` of another epoch is `recovered: false`, with no messages.",
        },
    ),
    "presence": (
        "Who is subscribed to the channel.",
        {"counts_only": "Only the counts, without `users` (the only form a channel with presence off answers)."},
    ),
    "snapshot": (
        "The snapshot of a live model's channel and the channel's position read with it: render `data`, then "
        "`subscribe` with `since` = `offset` and `epoch`.",
        {},
    ),
    "refresh": (
        "Replace the connection's token with a fresh one for the same user, before the old one expires "
        "(else the connection is closed with 4401). Channels the new token no longer grants are left.",
        {"token": "A fresh access token (JWT) for the same user."},
    ),
}

# An example `data` of each action (None: the frame has none).
ACTION_EXAMPLES: dict[str, dict[str, Any] | None] = {
    "ping": None,
    "pong": None,
    "subscribe": {"channel": "news", "since": 7, "epoch": "k3x9q2ab"},
    "unsubscribe": {"channel": "news"},
    "send_to_channel": {
        "channel": "news",
        "content": {"title": "hi"},
        "type": "news_update",
        "persist": True,
        "id": "msg-124",
    },
    "send_to_user": {"user_id": "u2", "content": "psst"},
    "message": {"content": {"typing": True}},
    "history": {"channel": "news", "since": 7, "limit": 50, "epoch": "k3x9q2ab"},
    "presence": {"channel": "presence-lobby", "counts_only": True},
    "snapshot": {"channel": "docs:general"},
    "refresh": {"token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"},
}

# The replies each action may get (an `error` reply is possible for every one).
REPLIES: dict[str, tuple[str, ...]] = {
    "ping": ("pong",),
    "pong": (),
    "subscribe": ("subscribed",),
    "unsubscribe": ("unsubscribed",),
    "send_to_channel": ("ack",),
    "send_to_user": ("ack",),
    "message": ("ack",),
    "history": ("history",),
    "presence": ("presence",),
    "snapshot": ("snapshot",),
    "refresh": ("refreshed",),
}

CLOSE_CODES: dict[int, str] = {
    CloseCode.NORMAL: "Closed normally.",
    CloseCode.GOING_AWAY: "The server is going away (shutdown): reconnect.",
    1009: "A frame over WEBSOCKET_MAX_MESSAGE_SIZE (daphne closes the connection).",
    CloseCode.TRY_AGAIN_LATER: "The process is at its connection limit, or the message bus was unavailable: "
    "retry later.",
    CloseCode.UNAUTHENTICATED: "Missing or invalid credentials, or the token expired.",
    CloseCode.FORBIDDEN: "Origin or IP address not allowed, or the application refused the connection.",
    CloseCode.IDLE: "Idle: nothing received within WEBSOCKET_DISCONNECT_TIMEOUT.",
    CloseCode.CLOSED_BY_ADMIN: "Closed by an administrator.",
    CloseCode.SLOW_CONSUMER: "Slow consumer (outbound queue full), sustained rate-limit abuse, or too many "
    "connections for this user or address.",
}

STREAM_ERRORS: dict[str, str] = {
    "closed": "Closed by an administrator.",
    "slow-consumer": "The client read too slowly (outbound queue full) or went over its share.",
    "shutdown": "The server is going away: reconnect.",
    "unauthenticated": "The token expired: reconnect with a fresh one.",
    "unavailable": "The message bus was unavailable: retry later.",
}

SSE_REFUSALS = {
    400: "a bad channel name or position, or too many channels",
    401: "missing or invalid credentials",
    403: "a channel, origin or IP address not allowed",
    429: "too many streams for this user or address",
    503: "SSE_MAX_CONNECTIONS reached, or the bus is unavailable (with Retry-After)",
}

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
EXAMPLE_TIME = "2026-11-29T10:00:00.000000Z"
EXAMPLE_ID = "3f0e8a52-7c1d-4b8e-9a57-0c2f5d9e1b44"
EXAMPLE_CONNECTION = "9b2d6c11-58e4-4f0a-8d3b-6a7e2f1c0d93"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """An object schema with exactly these properties: a field the document does not know fails
    the tests that validate real frames against it."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required is None else required
    schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def error_codes() -> list[str]:
    """Every error code of the product (`streaming.errors`)."""
    classes = [value for value in vars(errors).values() if isinstance(value, type)]
    return sorted({cls.code for cls in classes if issubclass(cls, errors.StreamingError)})


# ---------------------------------------------------------------------------------------------
# Schemas


def schemas() -> dict[str, dict[str, Any]]:
    offset = {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX}
    return {
        "ChannelName": dict(CHANNEL_SCHEMA),
        "Epoch": dict(EPOCH_SCHEMA),
        "Offset": {**offset, "description": "A position in a channel's history: 0 before the first message."},
        "Timestamp": {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "ISO 8601, UTC, with microseconds.",
        },
        "RequestId": dict(REQUEST_ID_SCHEMA),
        "Sender": nullable(
            obj(
                {"user_id": {"type": ["string", "null"]}, "connection_id": {"type": ["string", "null"]}},
                description="Stamped by the server from the sending connection's identity; null for messages "
                "published by the server or its HTTP API.",
            )
        ),
        "Envelope": obj(
            {
                "id": {"type": "string", "minLength": 1, "description": "Unique: drop an envelope seen before."},
                "type": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The message type (the SSE event name); clients and the HTTP API publish "
                    f"types matching {protocol.TYPE_RE.pattern}.",
                },
                "channel": nullable(ref("ChannelName")),
                "content": {"description": "The message, any JSON."},
                "sender": ref("Sender"),
                "timestamp": ref("Timestamp"),
                "offset": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "description": "The message's offset in the channel's history; null unless persisted.",
                },
            },
            description="Every delivered message, on both transports.",
        ),
        "NotificationContent": obj(
            {
                "title": {"type": "string"},
                "content": {"description": "The notification's body, any JSON."},
                "type": {"type": "string", "enum": list(protocol.NOTIFICATION_LEVELS)},
                "auto_hide": {"type": "boolean"},
                "duration": {"type": "integer", "minimum": 0, "description": "Milliseconds on screen."},
                "notification_id": {"type": "integer", "description": "Mark it read with the notifications API."},
            },
            required=["title", "content", "type", "auto_hide", "duration"],
        ),
        "PresenceEvent": obj(
            {
                "event": {"type": "string", "enum": ["join", "leave"]},
                "user_id": {"type": ["string", "null"]},
                "connection_id": {"type": "string"},
            }
        ),
        "ModelChange": obj(
            {
                "model": {"type": "string", "description": "The model's label, `app.model`."},
                "pk": {"description": "The object's primary key."},
                "data": {"description": "The registration's serializer output."},
            }
        ),
        "ErrorBody": obj(
            {
                "type": {"type": "string", "enum": error_codes(), "description": "The error code."},
                "error": {"type": "string", "description": "What went wrong, for people."},
                "fields": {"type": "object", "description": "Field errors, by field."},
            },
            required=["type", "error"],
        ),
        "HistoryPage": obj(
            {
                "channel": ref("ChannelName"),
                "offset": {**offset, "description": "The channel's newest offset."},
                "epoch": ref("Epoch"),
                "messages": {"type": "array", "items": ref("Envelope"), "maxItems": HISTORY_LIMIT_MAX},
                "recovered": {"type": "boolean", "description": "Nothing after `since` is missing."},
                "has_more": {"type": "boolean", "description": "More messages follow: ask again after the last."},
            }
        ),
        "SnapshotPage": obj(
            {
                "channel": ref("ChannelName"),
                "offset": {**offset, "description": "The channel's offset when `data` was read."},
                "epoch": ref("Epoch"),
                "data": {"description": "The application's data (a list channel: a list of objects)."},
                "has_more": {"type": "boolean", "description": "A list channel has more objects than `data`."},
            }
        ),
        "Presence": obj(
            {
                "channel": ref("ChannelName"),
                "connections": {"type": "integer", "minimum": 0},
                "user_count": {"type": "integer", "minimum": 0},
                "users": {
                    "type": "array",
                    "items": {"type": "string"},
                    "maxItems": PRESENCE_USERS_MAX,
                    "description": f"The first {PRESENCE_USERS_MAX} user ids; left out with `counts_only`.",
                },
            },
            required=["channel", "connections", "user_count"],
        ),
        "Greeting": greeting_schema(sse=False),
        "StreamGreeting": greeting_schema(sse=True),
    }


def greeting_schema(*, sse: bool) -> dict[str, Any]:
    channels = "Every channel of the stream." if sse else "Server-side channels joined at connect."
    data = obj(
        {
            "connection_id": {"type": "string"},
            "user_id": {"type": ["string", "null"]},
            "heartbeat_interval": {"type": "number", "minimum": 0, "description": "Seconds between heartbeats."},
            "channels": {"type": "array", "items": ref("ChannelName"), "description": channels},
            "refused": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Server-side channels refused, with the reason.",
            },
            "info": {"description": "What the application's connect hook attached to the connection."},
        },
        required=["connection_id", "user_id", "heartbeat_interval", *(["channels"] if sse else [])],
    )
    return obj({"type": {"type": "string", "const": "connected"}, "data": data})


def reply_schema(type_: str, content: dict[str, Any], *, request_id: bool = True) -> dict[str, Any]:
    properties: dict[str, Any] = {"type": {"type": "string", "const": type_}, "content": content}
    if request_id:
        properties["request_id"] = ref("RequestId")
    return obj(properties, required=["type", "content"])


def envelope_of(type_schema: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": [ref("Envelope"), {"properties": {"type": type_schema, "content": content}}]}


# ---------------------------------------------------------------------------------------------
# Messages


def message(name: str, title: str, payload: dict[str, Any], *, summary: str = "", **extra: Any) -> dict[str, Any]:
    found = {"name": name, "title": title, "contentType": "application/json", "payload": payload}
    if summary:
        found["summary"] = summary
    found.update(extra)
    return found


def examples(*payloads: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "payload": payload} for name, payload in payloads]


def action_messages() -> dict[str, dict[str, Any]]:
    """One message per action of `protocol.ACTIONS`: the frame a client sends."""
    found = {}
    for action in protocol.ACTIONS:
        summary, field_docs = ACTION_DOCS.get(action, (f"The `{action}` action.", {}))
        payload = protocol.frame_schema(action)
        data = payload["properties"]["data"]
        for key, description in field_docs.items():
            if key in data["properties"]:
                data["properties"][key] = {**data["properties"][key], "description": description}
        example: dict[str, Any] = {"action": action}
        if ACTION_EXAMPLES.get(action) is not None:
            example["data"] = ACTION_EXAMPLES[action]
        if action != "pong":  # the answer to a heartbeat: nothing to correlate
            example["request_id"] = "1"
        found[f"action.{action}"] = message(
            action,
            f"`{action}` action",
            payload,
            summary=summary,
            correlationId={"$ref": REQUEST_ID},
            examples=examples((action, example)),
        )
    return found


def reply_messages() -> dict[str, dict[str, Any]]:
    envelope = protocol.envelope(
        type="text", channel="news", content={"title": "hi"}, sender=protocol.sender("u1", EXAMPLE_CONNECTION),
        offset=7, id=EXAMPLE_ID, timestamp=EXAMPLE_TIME,
    )  # fmt: skip
    page = {"channel": "news", "offset": 7, "epoch": "k3x9q2ab", "messages": [envelope], "recovered": True,
            "has_more": False}  # fmt: skip
    contents: dict[str, tuple[dict[str, Any], str, Any]] = {
        "pong": (obj({"timestamp": ref("Timestamp")}), "The answer to `ping`.", {"timestamp": EXAMPLE_TIME}),
        "subscribed": (
            obj(
                {
                    "channel": ref("ChannelName"),
                    "offset": ref("Offset"),
                    "epoch": ref("Epoch"),
                    "recovered": {"type": "boolean", "description": "Every message after `since` follows."},
                }
            ),
            "The channel is joined: `offset` is its newest offset, `epoch` the epoch of its offsets.",
            {"channel": "news", "offset": 7, "epoch": "k3x9q2ab", "recovered": True},
        ),
        "unsubscribed": (
            obj(
                {
                    "channel": ref("ChannelName"),
                    "reason": {
                        "type": "string",
                        "description": "Present when the server left the channel itself: after `refresh`, "
                        "the new token no longer grants it (then the frame has no request_id).",
                    },
                },
                required=["channel"],
            ),
            "The channel is left.",
            {"channel": "news"},
        ),
        "ack": (
            obj(
                {"id": {"type": "string"}, "offset": {"type": "integer", "minimum": 1}},
                required=["id"],
            ),
            "Published: the envelope's id, and its offset when persisted.",
            {"id": EXAMPLE_ID, "offset": 8},
        ),
        "history": (ref("HistoryPage"), "A page of the channel's history.", page),
        "presence": (
            ref("Presence"),
            "Who is subscribed to the channel.",
            {"channel": "presence-lobby", "connections": 3, "user_count": 2, "users": ["u1", "u2"]},
        ),
        "snapshot": (
            ref("SnapshotPage"),
            "The live model channel's data and position.",
            {"channel": "docs", "offset": 7, "epoch": "k3x9q2ab", "data": [{"id": 1}], "has_more": False},
        ),
        "refreshed": (
            obj({"expires_at": {"type": ["number", "null"], "description": "The new token's expiry, Unix time."}}),
            "The new token is in use.",
            {"expires_at": 1796040000.0},
        ),
        "error": (
            ref("ErrorBody"),
            "The frame was refused; the connection stays open. Also sent without a request_id for a frame "
            "that had none (invalid JSON, a rate-limited frame).",
            protocol.error_body("invalid_channel", "A channel name is 1-100 characters.", None),
        ),
    }
    found = {}
    for type_, (content, summary, example) in contents.items():
        found[f"reply.{type_}"] = message(
            type_,
            f"`{type_}` reply",
            reply_schema(type_, content),
            summary=summary,
            correlationId={"$ref": REQUEST_ID},
            examples=examples((type_, protocol.reply(type_, example, "1"))),
        )
    return found


def server_messages() -> dict[str, dict[str, Any]]:
    """What the server sends that is not a reply: greeting, heartbeat, resets, envelopes."""
    greeting = protocol.connected(connection_id=EXAMPLE_CONNECTION, user_id="u1", heartbeat_interval=30)
    sse_greeting = protocol.connected(connection_id=EXAMPLE_CONNECTION, user_id="u1", heartbeat_interval=30)
    protocol.add_server_side(sse_greeting, ["news", "broadcast", "user:u1"], {}, None)
    envelope = protocol.envelope(
        type="text", channel="news", content={"title": "hi"}, sender=protocol.sender("u1", EXAMPLE_CONNECTION),
        offset=7, id=EXAMPLE_ID, timestamp=EXAMPLE_TIME,
    )  # fmt: skip
    notification = protocol.envelope(
        type=protocol.NOTIFICATION, channel="broadcast", id=EXAMPLE_ID, timestamp=EXAMPLE_TIME,
        content=protocol.notification_content(title="Deployed", content="v2 is live", level="success",
                                              auto_hide=True, duration=5000),
    )  # fmt: skip
    presence = protocol.envelope(
        type=protocol.PRESENCE, channel="presence-lobby", id=EXAMPLE_ID, timestamp=EXAMPLE_TIME,
        content=protocol.presence_content(event="join", user_id="u1", connection_id=EXAMPLE_CONNECTION),
    )  # fmt: skip
    change = protocol.envelope(
        type="updated", channel="doc:1", id=EXAMPLE_ID, timestamp=EXAMPLE_TIME, offset=2,
        content={"model": "documents.document", "pk": 1, "data": {"id": 1, "title": "v2"}},
    )  # fmt: skip
    event_name = {"x-sse-event": "The envelope's `type`."}
    return {
        "connected": message(
            "connected",
            "Greeting",
            ref("Greeting"),
            summary="Sent once the connection is accepted, before anything else.",
            examples=examples(("connected", greeting)),
        ),
        "heartbeat": message(
            "heartbeat",
            "Heartbeat",
            obj({"type": {"type": "string", "const": "heartbeat"}, "timestamp": ref("Timestamp")}),
            summary="Sent every heartbeat interval (the greeting's `heartbeat_interval`). On WebSocket, answer "
            'with `{"action": "pong"}` (any frame counts as life).',
            examples=examples(("heartbeat", protocol.heartbeat(EXAMPLE_TIME))),
            **{"x-sse-event": "heartbeat"},
        ),
        "stream-reset": message(
            protocol.RESET_EVENT,
            "History reset",
            reply_schema(
                protocol.RESET_EVENT,
                obj({"channel": ref("ChannelName"), "epoch": ref("Epoch"), "offset": {"const": 0}}),
                request_id=False,
            ),
            summary="A subscribed channel's history was reset: positions held for it are gone, its offsets start "
            "again at 1 under the new epoch.",
            examples=examples(
                ("reset", protocol.reply(protocol.RESET_EVENT, {"channel": "news", "epoch": "p8w2m5rt", "offset": 0}))
            ),
        ),
        "envelope": message(
            "envelope",
            "Message",
            ref("Envelope"),
            summary="A message published to a channel the connection is on, or to its user.",
            examples=examples(("text", envelope)),
            **event_name,
        ),
        "notification": message(
            protocol.NOTIFICATION,
            "Notification",
            envelope_of({"const": protocol.NOTIFICATION}, ref("NotificationContent")),
            summary="A stored notification (the notifications API), to everyone, a channel or a user.",
            examples=examples(("notification", notification)),
            **event_name,
        ),
        "presence-event": message(
            protocol.PRESENCE,
            "Presence event",
            envelope_of({"const": protocol.PRESENCE}, ref("PresenceEvent")),
            summary="A connection joined or left a `presence-*` channel.",
            examples=examples(("join", presence)),
            **event_name,
        ),
        "model-change": message(
            "model-change",
            "Live model change",
            envelope_of({"type": "string", "enum": list(MODEL_EVENTS)}, ref("ModelChange")),
            summary="A registered model's object was created, updated or deleted (persisted, after commit).",
            examples=examples(("updated", change)),
            **event_name,
        ),
        "sse.connected": message(
            "connected",
            "Stream greeting",
            ref("StreamGreeting"),
            summary="The first event of a stream (after `retry:`): the WebSocket greeting with the stream's "
            "`channels`.",
            examples=examples(("connected", sse_greeting)),
            **{"x-sse-event": "connected"},
        ),
        "sse.stream-open": message(
            "stream-open",
            "Stream open",
            obj(
                {
                    "channels": {"type": "array", "items": ref("ChannelName")},
                    "offsets": {"type": "object", "additionalProperties": ref("Offset")},
                    "epochs": {"type": "object", "additionalProperties": ref("Epoch")},
                }
            ),
            summary="The replay of missed messages is over; live events follow.",
            examples=examples(("open", {"channels": ["news"], "offsets": {"news": 7}, "epochs": {"news": "k3x9q2ab"}})),
            **{"x-sse-event": "stream-open"},
        ),
        "sse.stream-reset": message(
            protocol.RESET_EVENT,
            "Stream reset",
            obj({"channels": {"type": "array", "items": ref("ChannelName"), "minItems": 1}}),
            summary="A position older than the retained history or of another epoch (before `stream-open`), or a "
            "channel's history reset live: the stream continues from the channel's newest offset.",
            examples=examples(("reset", {"channels": ["news"]})),
            **{"x-sse-event": protocol.RESET_EVENT},
        ),
        "sse.stream-error": message(
            "stream-error",
            "Stream error",
            obj(
                {
                    "condition": {"type": "string", "enum": list(STREAM_ERRORS)},
                    "text": {"type": "string"},
                }
            ),
            summary="The last event of a stream the server ends: "
            + "; ".join(f"`{condition}`: {meaning}" for condition, meaning in STREAM_ERRORS.items()),
            examples=examples(("closed", {"condition": "closed", "text": "closed by an administrator"})),
            **{"x-sse-event": "stream-error"},
        ),
    }


# ---------------------------------------------------------------------------------------------
# The document


def build(*, host: str, secure: bool = False) -> dict[str, Any]:
    """The AsyncAPI document of this server, reached at `host` (`example.com:8000`)."""
    config = settings.REALTIME
    messages = {**action_messages(), **reply_messages(), **server_messages()}
    ws_messages = [key for key in messages if not key.startswith("sse.")]
    sse_messages = ["sse.connected", "sse.stream-open", "sse.stream-reset", "sse.stream-error", "heartbeat",
                    "envelope", "notification", "presence-event", "model-change"]  # fmt: skip
    spectacular = settings.SPECTACULAR_SETTINGS
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": f"{spectacular['TITLE']}: WebSocket and Server-Sent Events",
            "version": spectacular["VERSION"],
            "description": "The real-time protocol of this server: client frames, replies and envelopes over "
            "WebSocket (`/ws/connect`), events over Server-Sent Events (`/sse/connect`). The operations are a "
            "client's: `send` is what a client sends, `receive` what the server sends to it. The HTTP API "
            "(publishing, history, presence) is described by the OpenAPI schema at `/api/schema/`.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "websocket": {
                "host": host,
                "protocol": "wss" if secure else "ws",
                "description": "WebSocket endpoint" + _auth_note(config.websocket_auth_required),
                "security": [{"$ref": f"#/components/securitySchemes/{name}"} for name in SECURITY],
            },
            "http": {
                "host": host,
                "protocol": "https" if secure else "http",
                "description": "Server-Sent Events endpoint" + _auth_note(config.sse_auth_required),
                "security": [{"$ref": f"#/components/securitySchemes/{name}"} for name in SECURITY],
            },
        },
        "channels": {
            WS: {
                "address": "/ws/connect",
                "title": "WebSocket",
                "description": _ws_description(config),
                "servers": [{"$ref": "#/servers/websocket"}],
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in ws_messages},
                "bindings": {"ws": _ws_binding(config)},
                "x-close-codes": [
                    {"code": int(code), "name": _close_name(code), "meaning": meaning}
                    for code, meaning in sorted(CLOSE_CODES.items())
                ],
            },
            SSE: {
                "address": "/sse/connect",
                "title": "Server-Sent Events",
                "description": _sse_description(config),
                "servers": [{"$ref": "#/servers/http"}],
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in sse_messages},
                "x-http-refusals": [{"status": status, "meaning": meaning} for status, meaning in SSE_REFUSALS.items()],
            },
        },
        "operations": _operations(),
        "components": {
            "schemas": schemas(),
            "messages": messages,
            "correlationIds": {
                "requestId": {
                    "description": "A frame's `request_id` comes back in its reply.",
                    "location": "$message.payload#/request_id",
                }
            },
            "securitySchemes": SECURITY,
        },
    }


SECURITY: dict[str, dict[str, Any]] = {
    "tokenQuery": {"type": "httpApiKey", "name": "token", "in": "query", "description": "An access token (JWT)."},
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "An access token (JWT)."},
    "apiKeyHeader": {
        "type": "httpApiKey",
        "name": "X-API-Key",
        "in": "header",
        "description": "A server API key (WS_API_KEYS); the header is WS_API_KEY_HEADER.",
    },
    "apiKeyQuery": {"type": "httpApiKey", "name": "api_key", "in": "query", "description": "A server API key."},
}


def _auth_note(required: bool) -> str:
    if required:
        return "; credentials are required on this server."
    return "; anonymous connections are allowed on this server (an invalid credential is still refused)."


def _close_name(code: int) -> str:
    try:
        return CloseCode(code).name
    except ValueError:
        return "MESSAGE_TOO_BIG"  # daphne's, not the application's


def _ws_description(config: Any) -> str:
    rows = "\n".join(f"| {code} | {meaning} |" for code, meaning in sorted(CLOSE_CODES.items()))
    disabled = "" if config.websocket_enabled else "**Disabled on this server** (WEBSOCKET_ENABLED=false).\n\n"
    return (
        f'{disabled}Client frames are `{{"action", "data"?, "request_id"?}}` JSON text, at most '
        f"{config.websocket_max_message_size} bytes; every reply carries the frame's `request_id` back. A bad "
        "frame gets an `error` reply and never closes the connection. A browser passes its token as the "
        "subprotocol pair `access_token, <jwt>` (the server accepts with `access_token`).\n\n"
        "Refusals accept the handshake, then close with a code and a reason:\n\n"
        f"| close code | meaning |\n|---|---|\n{rows}"
    )


def _sse_description(config: Any) -> str:
    disabled = "" if config.sse_enabled else "**Disabled on this server** (SSE_ENABLED=false).\n\n"
    refusals = "; ".join(f"{status} {meaning}" for status, meaning in SSE_REFUSALS.items())
    return (
        f"{disabled}`GET /sse/connect?channels=a,b`: a `text/event-stream` of events whose `data:` is one JSON "
        "line. The stream starts with `retry:` and `connected`, replays what the client missed, sends "
        "`stream-open`, then live events. An envelope's event name is its `type`. Persisted messages (and "
        "`stream-open`, `stream-reset`) carry `id:`, the stream's position: `channel:offset-epoch` pairs "
        "separated by commas (`news:7-k3x9q2ab,alerts:0`); a client resumes by sending the last one as "
        "`Last-Event-ID` or `?lastEventId=`. `broadcast` and, when authenticated, `user:<id>` are always "
        f"joined. Refusals are HTTP errors before any stream, with the JSON error body: {refusals}."
    )


def _ws_binding(config: Any) -> dict[str, Any]:
    return {
        "method": "GET",
        "query": {
            "type": "object",
            "properties": {
                "token": {"type": "string", "description": "An access token (JWT)."},
                "api_key": {"type": "string", "description": "A server API key."},
            },
        },
        "headers": {
            "type": "object",
            "properties": {
                "Authorization": {"type": "string", "description": "`Bearer <jwt>`."},
                config.ws_api_key_header: {"type": "string", "description": "A server API key."},
                "Sec-WebSocket-Protocol": {"type": "string", "description": "`access_token, <jwt>` (browsers)."},
            },
        },
        "bindingVersion": "0.1.0",
    }


def _sse_query() -> dict[str, Any]:
    names = {"type": "string", "description": "Comma-separated channel names."}
    return {
        "type": "object",
        "properties": {
            "channels": names,
            "channel": {"type": "string", "description": "One channel name (may be repeated)."},
            "token": {"type": "string", "description": "An access token (JWT): EventSource cannot send headers."},
            "api_key": {"type": "string", "description": "A server API key."},
            "lastEventId": {"type": "string", "description": "The position to resume from, as `Last-Event-ID`."},
        },
    }


def _operations() -> dict[str, Any]:
    channel = {"$ref": f"#/channels/{WS}"}

    def refs(keys: list[str], on: str = WS) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{on}/messages/{key}"} for key in keys]

    operations: dict[str, Any] = {}
    for action in protocol.ACTIONS:
        replies = [f"reply.{type_}" for type_ in REPLIES.get(action, ())] + ["reply.error"]
        summary = ACTION_DOCS.get(action, (f"The `{action}` action.", {}))[0]
        operations[action] = {
            "action": "send",
            "channel": channel,
            "summary": summary,
            "messages": refs([f"action.{action}"]),
            "reply": {"channel": channel, "messages": refs(replies)},
        }
    envelopes = ["envelope", "notification", "presence-event", "model-change"]
    operations.update(
        {
            "receiveGreeting": {
                "action": "receive",
                "channel": channel,
                "summary": "The greeting, first.",
                "messages": refs(["connected"]),
            },
            "receiveHeartbeat": {
                "action": "receive",
                "channel": channel,
                "summary": "Heartbeats; answer with `pong`.",
                "messages": refs(["heartbeat"]),
            },
            "receiveMessages": {
                "action": "receive",
                "channel": channel,
                "summary": "Envelopes of the channels the connection is on.",
                "messages": refs(envelopes),
            },
            "receiveStreamReset": {
                "action": "receive",
                "channel": channel,
                "summary": "A subscribed channel's history was reset.",
                "messages": refs(["stream-reset"]),
            },
            "receiveUnrequested": {
                "action": "receive",
                "channel": channel,
                "summary": "Frames no request asked for: `unsubscribed` with a `reason` (after `refresh`), "
                "`error` for a frame without `request_id`.",
                "messages": refs(["reply.unsubscribed", "reply.error"]),
            },
            "receiveStream": {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{SSE}"},
                "summary": "The events of a stream.",
                "messages": refs(
                    [
                        "sse.connected",
                        "sse.stream-open",
                        "sse.stream-reset",
                        "sse.stream-error",
                        "heartbeat",
                        *envelopes,
                    ],
                    SSE,
                ),
                "bindings": {"http": {"method": "GET", "query": _sse_query(), "bindingVersion": "0.3.0"}},
            },
        }
    )
    return operations


__all__ = ["ACTION_DOCS", "CLOSE_CODES", "REPLIES", "build", "error_codes"]
