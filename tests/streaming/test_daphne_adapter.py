"""The daphne adapter: each private name it relies on, and what it does with them."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import socket
import time
from pprint import pformat

import pytest
from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor

from streaming import daphne_adapter
from streaming.daphne_adapter import launcher
from streaming.daphne_adapter.io import abort_connection, close_websocket, write_buffer_probe
from streaming.daphne_adapter.server import GracefulServer

# ---------------------------------------------------------------------------------------------
# The private names, pinned: an upgrade that moves one fails here


@pytest.mark.parametrize(("module", "path"), sorted(daphne_adapter.REQUIRED))
def test_private_name_still_exists(module, path):
    assert daphne_adapter._resolve(module, path) is not None


def test_the_installed_stack_is_one_the_adapter_knows():
    """Otherwise the adapter stands aside silently: no backpressure, no direct writes."""
    daphne_adapter.active.cache_clear()
    assert daphne_adapter.active()


def test_twisted_transports_keep_their_write_buffer_and_socket_on_the_instance():
    from twisted.internet import abstract, tcp

    assert abstract.FileDescriptor()._tempDataLen == 0
    left, right = socket.socketpair()
    try:
        connection = tcp.Connection(left, protocol=None, reactor=reactor)
        assert connection.socket is left
    finally:
        left.close()
        right.close()


def test_daphne_hands_applications_a_partial_of_handle_reply():
    from daphne.server import Server

    assert "send=partial(self.handle_reply, protocol)" in inspect.getsource(Server.create_application)


def test_daphne_websockets_carry_the_state_the_adapter_reads():
    from daphne.ws_protocol import WebSocketFactory
    from twisted.internet.testing import StringTransport

    class StubServer:
        pass

    factory = WebSocketFactory(StubServer())
    websocket = factory.buildProtocol(None)
    websocket.makeConnection(StringTransport())
    assert websocket.state == WebSocketProtocol.STATE_CONNECTING and websocket.factory is factory
    assert websocket._perMessageCompress is None and websocket.autoFragmentSize == 0
    assert factory.maskServerFrames is False
    assert websocket.muted is False  # read by WatchedWebSocketProtocol before its hook


def test_daphne_hands_each_message_to_the_application_queue_in_on_message():
    """WatchedWebSocketProtocol sees a message before daphne's onMessage queues it; a daphne
    whose onMessage changed must be read again before this fingerprint is updated."""
    from daphne.ws_protocol import WebSocketProtocol as DaphneWebSocketProtocol

    source = inspect.getsource(DaphneWebSocketProtocol.onMessage)
    assert "self.application_queue.put_nowait" in source and "if self.muted" in source


def test_the_forked_application_checker_is_still_dapnes_own():
    """GracefulServer.application_checker is daphne 4.2's with one loop changed; a daphne whose
    checker changed must be read again before this fingerprint is updated."""
    from daphne.server import Server

    source = inspect.getsource(Server.application_checker).encode()
    assert hashlib.sha256(source).hexdigest() == "ccb688341a7d0bc13647a7d86815adb6a88af08299e4b0460379ea4d55ade79d"


async def test_an_unknown_stack_gets_plain_asgi(monkeypatch):
    monkeypatch.setitem(daphne_adapter.SUPPORTED, "daphne", ("99.",))
    daphne_adapter.active.cache_clear()
    try:
        assert not daphne_adapter.active()
        protocol = Protocol(Protocol.STATE_OPEN)
        send = daphne_send(protocol)
        assert write_buffer_probe(send) is None and abort_connection(send) is False
        await close_websocket(send, 1001, "bye")
        assert protocol.close_frames == [] and protocol.replies == [
            {"type": "websocket.close", "code": 1001, "reason": "bye"}
        ]
    finally:
        daphne_adapter.active.cache_clear()


# ---------------------------------------------------------------------------------------------
# Closing a WebSocket under daphne, in every protocol state


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


# ---------------------------------------------------------------------------------------------
# Reaping finished applications (GracefulServer.application_checker)


class CheckedProtocol:
    def __init__(self) -> None:
        self.handled: list[BaseException] = []

    def handle_exception(self, exception: BaseException) -> None:
        self.handled.append(exception)


def checker_server(connections: dict, due=None) -> GracefulServer:
    server = GracefulServer.__new__(GracefulServer)  # no sockets: only the checker's state
    server.connections = connections
    server.application_close_timeout = 10
    server._due = set(connections if due is None else due)
    server._unsettled = set(connections)  # as protocol_connected leaves them
    return server


async def test_application_checker_reaps_like_daphne(monkeypatch):
    monkeypatch.setattr(reactor, "callLater", lambda delay, function: None)
    loop = asyncio.get_running_loop()
    running, done, failed, stuck = (loop.create_future() for _ in range(4))
    done.set_result(None)
    failed.set_exception(RuntimeError("boom"))
    live, closed, crashed, hung, gone = (CheckedProtocol() for _ in range(5))
    connections = {
        live: {"application_instance": running},  # open, app running: kept as is
        closed: {"application_instance": done, "disconnected": time.time()},  # both done: removed
        crashed: {"application_instance": failed},  # app failed on an open connection: told, kept
        hung: {"application_instance": stuck, "disconnected": time.time() - 60},  # too slow: cancelled, removed
        gone: {"disconnected": time.time()},  # nothing left: removed
    }
    server = checker_server(connections)
    server.application_checker()
    assert set(connections) == {live, crashed}
    assert server._due == set()  # nothing left closing: nothing to look at next round
    assert connections[live] == {"application_instance": running}
    assert "application_instance" not in connections[crashed]
    assert [str(e) for e in crashed.handled] == ["boom"]
    assert stuck.cancelled()


async def test_application_checker_looks_only_at_connections_that_changed(monkeypatch):
    """An idle process's 10,000 connections cost the reaping round nothing: only a connection
    whose application ended or whose client left (or one still closing) is looked at."""
    monkeypatch.setattr(reactor, "callLater", lambda delay, function: None)
    loop = asyncio.get_running_loop()
    idle = {CheckedProtocol(): {"application_instance": loop.create_future()} for _ in range(10_000)}
    closing_app = loop.create_future()
    leaving = CheckedProtocol()
    server = checker_server({**idle, leaving: {"application_instance": closing_app}}, due=[])
    server.connections[leaving]["disconnected"] = time.time()
    server._due.add(leaving)  # as daphne's protocol_disconnected does through GracefulServer
    looked_at = []
    real_reap = GracefulServer._reap
    monkeypatch.setattr(GracefulServer, "_reap", lambda self, p: looked_at.append(p) or real_reap(self, p))
    server.application_checker()
    assert looked_at == [leaving] and server._due == {leaving}  # its application is still ending
    closing_app.set_result(None)
    server.application_checker()
    assert leaving not in server.connections and server._due == set()
    assert len(server.connections) == 10_000


async def test_the_timeout_round_skips_open_websockets_but_once_a_minute(monkeypatch):
    monkeypatch.setattr(reactor, "callLater", lambda delay, function: None)

    class Timed:
        def __init__(self, state) -> None:
            self.state, self.checked = state, 0

        def check_timeouts(self) -> None:
            self.checked += 1

    open_ws, handshaking, http = (
        Timed(WebSocketProtocol.STATE_OPEN),
        Timed(WebSocketProtocol.STATE_CONNECTING),
        Timed(None),
    )
    server = checker_server({})
    for protocol in (open_ws, handshaking, http):
        GracefulServer.protocol_connected(server, protocol)  # daphne's bookkeeping, then ours
    assert server._unsettled == {open_ws, handshaking, http}
    server._next_full_timeout_check = 0.0
    server.timeout_checker()  # the first round looks at everyone
    server.timeout_checker()
    assert (open_ws.checked, handshaking.checked, http.checked) == (1, 2, 2)
    assert server._unsettled == {handshaking, http}  # the open WebSocket left the 2-second rounds
    handshaking.state = WebSocketProtocol.STATE_OPEN
    del server.connections[http]  # gone (reaped)
    server.timeout_checker()
    assert (handshaking.checked, http.checked) == (2, 2) and server._unsettled == set()
    server._next_full_timeout_check = 0.0
    server.timeout_checker()  # once a minute: every connection again
    assert (open_ws.checked, handshaking.checked) == (2, 3)


# ---------------------------------------------------------------------------------------------
# autobahn's per-handshake debug line


class CountsRepr:
    def __init__(self) -> None:
        self.calls = 0

    def __repr__(self) -> str:
        self.calls += 1
        return "counted"


@pytest.fixture
def deferred(monkeypatch):
    monkeypatch.setattr(autobahn_protocol, "pformat", autobahn_protocol.pformat)
    monkeypatch.setattr(autobahn_protocol.Timings, "__str__", autobahn_protocol.Timings.__str__)
    launcher.defer_autobahn_debug_formatting()


def test_autobahn_debug_value_is_not_formatted_unless_written(deferred):
    value = CountsRepr()
    held = autobahn_protocol.pformat([("openHandshakeTimeout", value, "Factory")])
    assert value.calls == 0
    assert f"\n{held}" == "\n" + pformat([("openHandshakeTimeout", value, "Factory")])
    assert value.calls == 2  # once by the log line, once by the reference above


def test_autobahn_debug_line_reads_as_before(deferred):
    config = [("autoPingInterval", 0, "WebSocketServerFactory"), ("maxMessagePayloadSize", 1 << 20, "Protocol")]
    assert str(autobahn_protocol.pformat(config)) == pformat(config)
    assert f"{autobahn_protocol.pformat(config)!s:>5}" == pformat(config)


def test_autobahn_timings_still_print_as_text(deferred):
    timings = autobahn_protocol.Timings()
    timings.track("onOpen")
    assert isinstance(str(timings), str) and "onOpen" in str(timings)


# ---------------------------------------------------------------------------------------------
# The launcher's listen queue, through daphne's public endpoint strings


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["-b", "0.0.0.0", "-p", "8000", "app:application"],
            ["-e", "tcp:port=8000:interface=0.0.0.0:backlog=4096", "app:application"],
        ),
        (
            ["--bind=::1", "--port=9000", "-v", "2", "app:application"],
            ["-e", r"tcp:port=9000:interface=\:\:1:backlog=4096", "-v", "2", "app:application"],
        ),
        (["app:application"], ["-e", "tcp:port=8000:interface=127.0.0.1:backlog=4096", "app:application"]),
        (["-u", "/tmp/s.sock", "app:application"], ["-u", "/tmp/s.sock", "app:application"]),
        (["-e", "tcp:port=1", "app:application"], ["-e", "tcp:port=1", "app:application"]),
    ],
)
def test_host_and_port_become_an_endpoint_with_a_listen_queue(argv, expected):
    assert launcher.with_listen_backlog(argv) == expected


def test_the_launched_server_listens_with_the_long_queue():
    from daphne.cli import CommandLineInterface

    interface = CommandLineInterface()
    interface.server_class = lambda **kwargs: type(
        "Recorded", (), {"run": lambda self: None, "abort_start": False, **kwargs}
    )()
    interface.run(launcher.with_listen_backlog(["-b", "127.0.0.1", "-p", "8123", "realtime_project.asgi:application"]))
    assert interface.server.endpoints == ["tcp:port=8123:interface=127.0.0.1:backlog=4096"]


def test_autobahn_read_debug_line_is_built_only_when_debug_logging_is_on(monkeypatch):
    import txaio
    from autobahn.twisted import websocket as autobahn_twisted

    adapter = autobahn_twisted.WebSocketAdapterProtocol
    monkeypatch.setattr(adapter, "dataReceived", adapter.dataReceived)
    highlighted = []
    monkeypatch.setattr(autobahn_twisted, "hltype", lambda value: highlighted.append(value) or "t")
    launcher.skip_autobahn_receive_debug_line()
    launcher.skip_autobahn_receive_debug_line()  # twice is once

    class Reader(adapter):
        def __init__(self) -> None:
            self.peer, self.read = "tcp4:127.0.0.1:1", []
            self.log = txaio.make_logger()

        def _dataReceived(self, data: bytes) -> None:
            self.read.append(data)

    reader = Reader()
    level = txaio.get_global_log_level()
    reader.dataReceived(b"frame")
    assert reader.read == [b"frame"] and highlighted == []  # info: nothing built
    try:
        txaio.set_global_log_level("debug")
        reader.dataReceived(b"again")
    finally:
        txaio.set_global_log_level(level)
    assert reader.read == [b"frame", b"again"] and len(highlighted) == 1
