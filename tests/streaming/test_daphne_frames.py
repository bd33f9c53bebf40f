"""Whole text frames read at once (`server.complete_text_frames`) give what autobahn gives.

The same bytes, cut into the same reads, go to a protocol with the fast path and to one that hands
everything to autobahn; the messages the application gets, the bytes written back (pongs, close
frames), the state, the close code and the traffic counters must be the same.
"""

from __future__ import annotations

import itertools

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from streaming.daphne_adapter.server import WatchedWebSocketProtocol

LIMIT = 300  # bytes: a message limit the generated frames cross

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Recorded(WatchedWebSocketProtocol):
    """The product's protocol without daphne's application side: accepts, records."""

    muted = False

    def onConnect(self, request):
        self.received: list[tuple[bytes, bool]] = []
        self.closed: tuple | None = None
        self.on_message = self.record
        return None

    def onOpen(self):
        pass

    def record(self, payload: bytes, is_binary: bool) -> bool:
        self.received.append((payload, is_binary))
        return True

    def onClose(self, wasClean, code, reason):
        self.closed = (wasClean, code, reason)


class AutobahnOnly(Recorded):
    def dataReceived(self, data: bytes) -> None:
        WebSocketServerProtocol.dataReceived(self, data)


class Transport(StringTransport):
    def unregisterProducer(self):  # autobahn unregisters on a drop whether it registered or not
        self.producer = None


def opened(protocol_class: type) -> Recorded:
    factory = WebSocketServerFactory("ws://localhost/ws")
    factory.protocol = protocol_class
    factory.setProtocolOptions(failByDrop=False, maxMessagePayloadSize=LIMIT, maxFramePayloadSize=LIMIT)
    protocol = factory.buildProtocol(None)
    transport = Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    assert protocol.state == WebSocketProtocol.STATE_OPEN, transport.value()
    transport.clear()
    return protocol


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
    length_bytes: int | None = None,
) -> bytes:
    """A client frame; `length_bytes` 2 or 8 forces a (possibly non-minimal) extended length."""
    length = len(payload)
    if length_bytes is None:
        length_bytes = 0 if length < 126 else 2 if length < 65536 else 8
    code = {0: length, 2: 126, 8: 127}[length_bytes]
    head = bytes(((0x80 if fin else 0) | rsv << 4 | opcode, (0x80 if mask else 0) | code))
    head += length.to_bytes(length_bytes, "big") if length_bytes else b""
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def observed(protocol_class: type, reads: list[bytes]) -> tuple:
    protocol = opened(protocol_class)
    for data in reads:
        protocol.dataReceived(data)
    stats = protocol.trafficStats
    counters = (
        stats.incomingOctetsWireLevel,
        stats.incomingOctetsWebSocketLevel,
        stats.incomingOctetsAppLevel,
        stats.incomingWebSocketFrames,
        stats.incomingWebSocketMessages,
    )
    return protocol.received, protocol.transport.value(), protocol.state, protocol.closed, counters


def same_as_autobahn(reads: list[bytes]) -> tuple:
    fast = observed(Recorded, reads)
    assert fast == observed(AutobahnOnly, reads)
    return fast


# ---------------------------------------------------------------------------------------------
# Cases


def test_a_whole_text_frame_reaches_the_application():
    received, written, _state, closed, counters = same_as_autobahn([frame(1, b'{"type":"pong"}')])
    assert received == [(b'{"type":"pong"}', False)] and written == b"" and closed is None
    assert counters == (21, 15, 15, 1, 1)


def test_several_frames_in_one_read_arrive_in_order():
    payloads = [b"one", "dví".encode(), b"x" * 200, b""]
    received, *_ = same_as_autobahn([b"".join(frame(1, p) for p in payloads)])
    assert received == [(p, False) for p in payloads]


def test_a_frame_cut_over_two_reads_is_read_by_autobahn():
    whole = frame(1, b"x" * 140) + frame(1, b"after")
    received, *_ = same_as_autobahn([whole[:50], whole[50:]])
    assert received == [(b"x" * 140, False), (b"after", False)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(1, b"\xff\xfe"), 1007),  # invalid UTF-8
        (frame(1, "é".encode()[:1]), 1007),  # a code point cut short
        (frame(1, b"y" * (LIMIT + 1)), 1009),
        (frame(1, b"abc", rsv=1), 1002),
        (frame(1, b"abc", mask=None), 1002),
        (frame(1, b"abc", length_bytes=2), 1002),  # extended length not minimal
        (frame(0, b"abc"), 1002),  # continuation outside a message
        (frame(3, b"abc"), 1002),  # reserved opcode
    ],
)
def test_a_bad_frame_after_good_ones_gets_autobahns_close(data, code):
    received, written, state, _closed, _ = same_as_autobahn([frame(1, b"good") + data + frame(1, b"never")])
    assert received == [(b"good", False)]
    assert written[:2] == b"\x88" + bytes((len(written) - 2,)) and int.from_bytes(written[2:4], "big") == code
    assert state != WebSocketProtocol.STATE_OPEN


def test_control_and_binary_frames_and_fragments_go_to_autobahn():
    reads = [
        frame(9, b"are you there")  # a ping, answered with a pong
        + frame(1, b"frag", fin=False)
        + frame(9, b"")
        + frame(0, b"ment")
        + frame(2, b"\x00\x01")
        + frame(1, b"plain")
        + frame(10, b"unsolicited")
    ]
    received, written, *_ = same_as_autobahn(reads)
    assert received == [(b"fragment", False), (b"\x00\x01", True), (b"plain", False)]
    assert written == b"\x8a\x0dare you there\x8a\x00"


def test_a_close_frame_ends_reading():
    received, written, _state, _closed, _ = same_as_autobahn(
        [frame(1, b"last") + frame(8, (1000).to_bytes(2, "big") + b"bye") + frame(1, b"ignored")]
    )
    assert received == [(b"last", False)] and written.startswith(b"\x88\x02\x03\xe8")


def test_a_message_that_closes_the_connection_leaves_the_rest_to_autobahn():
    class ClosesOnFirst(Recorded):
        def record(self, payload: bytes, is_binary: bool) -> bool:
            super().record(payload, is_binary)
            self.sendClose(code=4000, reason="enough")
            return True

    class ClosesOnFirstAutobahnOnly(ClosesOnFirst, AutobahnOnly):
        pass

    reads = [frame(1, b"first") + frame(1, b"second") + frame(8, (4000).to_bytes(2, "big"))]
    fast = observed(ClosesOnFirst, reads)
    assert fast == observed(ClosesOnFirstAutobahnOnly, reads)
    received, written, state, _closed, _ = fast
    assert received == [(b"first", False)]  # autobahn reads on while closing; nothing is acted on
    assert written[:1] == b"\x88" and int.from_bytes(written[2:4], "big") == 4000
    assert state != WebSocketProtocol.STATE_OPEN


# ---------------------------------------------------------------------------------------------
# Any mix, cut anywhere

text = st.text(max_size=180).map(str.encode)
frames = st.one_of(
    text.map(lambda p: frame(1, p)),
    text.map(lambda p: frame(1, p, mask=b"\x00\x00\x00\x00")),
    st.binary(max_size=40).map(lambda p: frame(1, p)),  # often not UTF-8
    st.binary(max_size=40).map(lambda p: frame(2, p)),
    st.binary(max_size=40).map(lambda p: frame(9, p)),
    st.binary(max_size=40).map(lambda p: frame(10, p)),
    text.map(lambda p: frame(1, p, fin=False) + frame(0, p)),
    st.tuples(st.integers(1, 7), text).map(lambda a: frame(1, a[1], rsv=a[0])),
    text.map(lambda p: frame(1, p, mask=None)),
    st.integers(0, 400).map(lambda n: frame(1, b"z" * n)),
    st.integers(0, 200).map(lambda n: frame(1, b"w" * n, length_bytes=2)),
    st.just(frame(1, b"q", length_bytes=8)),
    st.just(frame(8, (1000).to_bytes(2, "big"))),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 4000), max_size=4))
def test_any_frames_cut_anywhere_give_what_autobahn_gives(parts, cuts):
    data = b"".join(parts)
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    reads = [data[a:b] for a, b in itertools.pairwise(points) if b > a]
    same_as_autobahn(reads)
