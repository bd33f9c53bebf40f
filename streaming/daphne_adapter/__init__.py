"""Every use of daphne's, Twisted's and autobahn's private state, in one place.

The product runs on any ASGI server. Under daphne it does more, by reaching past ASGI:

* `io`: backpressure (daphne never pushes back on a client that stops reading, so the writer
  reads Twisted's write buffer), complete close frames (daphne drops the reason and autobahn
  refuses 1001/1013 from a server), aborting a socket that takes nothing, and writing finished
  frames straight to the socket (one frame built per publish for all subscribers).
* `server`: daphne's `Server` with a graceful SIGTERM, the runtime started before it listens,
  WebSocket message limits, request bodies refused before they are read, a reaping loop that
  does not allocate per connection, and whole small text frames read in one step.
* `launcher`: `python -m realtime_project.server` — daphne's CLI with these in place.

Each private name the adapter relies on is in `REQUIRED` and pinned by a test
(tests/streaming/test_daphne_adapter.py), so an upgrade that moves one fails in `make test`
rather than in production. On versions outside `SUPPORTED`, or when a name is missing, `active()`
is false and the adapter stands aside: plain ASGI sends, daphne's own close and reaping, no direct
writes and no write-buffer probe (nothing then bounds what daphne buffers for a stalled reader but
the outbox), bodies bounded by the ASGI middleware only.
"""

from __future__ import annotations

import functools
import logging
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

logger = logging.getLogger(__name__)

# The releases the private names below were read from (and tested with).
SUPPORTED = {"daphne": ("4.2.",), "twisted": ("24.", "25.", "26."), "autobahn": ("24.", "25.", "26.")}

# Module- and class-level names, checked by `active()`: (module, attribute path) → what for.
REQUIRED = {
    ("twisted.internet.abstract", "FileDescriptor.dataBuffer"): "bytes waiting in a socket's write buffer",
    ("twisted.internet.abstract", "FileDescriptor.offset"): "how much of dataBuffer is already sent",
    ("twisted.internet.tcp", "Connection.abortConnection"): "dropping a socket that takes nothing",
    ("twisted.web.http", "Request._disconnected"): "an SSE stream whose client has gone",
    ("twisted.web.http", "Request.startedWriting"): "an SSE response whose headers are out",
    ("twisted.web.http", "Request.chunked"): "an SSE response sent in chunks",
    ("daphne.server", "Server.handle_reply"): "the `send` daphne hands the application (a partial of it)",
    ("daphne.server", "Server.application_checker"): "the reaping loop replaced by ours",
    ("daphne.server", "Server.timeout_checker"): "the timeout loop replaced by ours",
    ("daphne.server", "Server.create_application"): "where an application's end is hooked",
    ("daphne.server", "Server.protocol_disconnected"): "where a client's departure is hooked",
    ("daphne.server", "Server.kill_all_applications"): "the shutdown hook that closes connections first",
    ("daphne.server", "twisted_loop"): "the event loop the runtime starts on before listening",
    ("daphne.http_protocol", "WebRequest.gotLength"): "refusing a declared body over the limit",
    ("daphne.http_protocol", "WebRequest.handleContentChunk"): "refusing a chunked body over the limit",
    ("daphne.http_protocol", "HTTPFactory.buildProtocol"): "installing the bounded request class",
    ("daphne.ws_protocol", "WebSocketProtocol.onMessage"): "client messages seen as they arrive",
    ("daphne.ws_protocol", "WebSocketFactory.protocol"): "installing that protocol class",
    ("daphne.cli", "CommandLineInterface.server_class"): "the launcher's server",
    ("daphne.cli", "AccessLogGenerator"): "the launcher's redacting access log",
    ("autobahn.websocket.protocol", "WebSocketProtocol.sendCloseFrame"): "close frames with any code and reason",
    ("autobahn.websocket.protocol", "WebSocketProtocol.STATE_OPEN"): "whether a close frame may be sent",
    ("autobahn.websocket.protocol", "WebSocketProtocol.STATE_CLOSING"): "a close already under way",
    ("autobahn.websocket.protocol", "WebSocketProtocol.STATE_CLOSED"): "a connection already closed",
    ("autobahn.websocket.protocol", "pformat"): "the per-handshake debug formatting that is deferred",
    ("autobahn.websocket.protocol", "Timings"): "the other pformat user, kept as it was",
    ("autobahn.websocket.protocol", "TrafficStats"): "the counters a frame read at once still updates",
    ("autobahn.twisted.websocket", "WebSocketAdapterProtocol._onMessage"): "where a frame read at once goes",
}

# Names set on instances, which `active()` cannot see without one; the tests make real instances.
INSTANCE_ATTRIBUTES = {
    "twisted FileDescriptor._tempDataLen": "bytes queued before joining dataBuffer",
    "twisted tcp.Connection.socket": "the socket a direct write goes to",
    "twisted HTTPChannel._path": "the path of a request whose body is arriving (its limit)",
    "twisted Request.channel.transport": "an SSE stream's connection",
    "autobahn WebSocketServerProtocol.state / .transport / .factory": "an accepted WebSocket",
    "autobahn WebSocketServerProtocol._perMessageCompress / .autoFragmentSize": "frames sent as built",
    "autobahn WebSocketServerFactory.maskServerFrames": "frames sent as built",
    "daphne WebSocketProtocol.muted": "messages daphne would drop are not seen either",
    "autobahn WebSocketProtocol.data / .current_frame / .inside_message / .autoPingTimeoutCall / .applyMask"
    " / .logOctets / .logFrames / .trackedTimings / .maxFramePayloadSize / .maxMessagePayloadSize"
    " / .trafficStats / ._listeners": "whole text frames read at once (tests/streaming/test_daphne_frames.py)",
}


def _resolve(module: str, path: str) -> object:
    target: object = import_module(module)
    for name in path.split("."):
        target = getattr(target, name)
    return target


def _supported_versions() -> bool:
    for package, prefixes in SUPPORTED.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            return False
        if not installed.startswith(prefixes):
            logger.warning("%s %s is not a version the daphne adapter knows; running on plain ASGI", package, installed)
            return False
    return True


@functools.cache
def active() -> bool:
    """Whether the installed daphne/Twisted/autobahn are ones the adapter was written for."""
    if not _supported_versions():
        return False
    for module, path in REQUIRED:
        try:
            _resolve(module, path)
        except (ImportError, AttributeError):
            logger.warning("%s.%s is gone; the daphne adapter stands aside (plain ASGI)", module, path)
            return False
    return True
