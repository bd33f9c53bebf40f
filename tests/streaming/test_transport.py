"""Closing a WebSocket under daphne (`streaming.transport.close_websocket`), in every protocol state."""

from __future__ import annotations

import functools

import pytest
from autobahn.websocket.protocol import WebSocketProtocol

from streaming.transport import close_websocket


class Protocol:
    """daphne's protocol as `close_websocket` sees it: autobahn's states and close frame."""

    STATE_CLOSED = WebSocketProtocol.STATE_CLOSED
    STATE_CONNECTING = WebSocketProtocol.STATE_CONNECTING
    STATE_CLOSING = WebSocketProtocol.STATE_CLOSING
    STATE_OPEN = WebSocketProtocol.STATE_OPEN

    def __init__(self, state: int) -> None:
        self.state = state
        self.close_frames: list[tuple[int, bytes]] = []
        self.replies: list[dict] = []

    def sendCloseFrame(self, code: int, reasonUtf8: bytes, isReply: bool) -> None:
        assert not isReply
        self.close_frames.append((code, reasonUtf8))


async def handle_reply(protocol: Protocol, message: dict) -> None:  # daphne's Server.handle_reply
    protocol.replies.append(message)


def daphne_send(protocol: Protocol):
    return functools.partial(handle_reply, protocol)


async def test_an_open_websocket_gets_the_close_frame_with_any_code():
    protocol = Protocol(Protocol.STATE_OPEN)
    await close_websocket(daphne_send(protocol), 1001, "server shutting down")
    assert protocol.close_frames == [(1001, b"server shutting down")] and protocol.replies == []


@pytest.mark.parametrize("state", [Protocol.STATE_CLOSING, Protocol.STATE_CLOSED])
async def test_a_websocket_already_closing_gets_nothing_more(state):
    protocol = Protocol(state)
    await close_websocket(daphne_send(protocol), 1001, "server shutting down")
    assert protocol.close_frames == [] and protocol.replies == []


async def test_a_websocket_still_connecting_is_closed_through_daphne():
    protocol = Protocol(Protocol.STATE_CONNECTING)
    await close_websocket(daphne_send(protocol), 4401, "authentication required")
    assert protocol.replies == [{"type": "websocket.close", "code": 4401, "reason": "authentication required"}]


async def test_under_another_server_the_close_is_an_asgi_message():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await close_websocket(send, 1001, "bye")
    assert sent == [{"type": "websocket.close", "code": 1001, "reason": "bye"}]
