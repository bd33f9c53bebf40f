"""An HTTP/1.1 load-generator process: keep-alive clients that POST flat out.

Run by the harness (`HttpLoad`): `python -m bench.httpload OPTIONS.json`. The options give the
host and port, the source address and one raw request per client (repeated as is). Each client is
one keep-alive connection with one request in flight; responses are parsed by hand (status line,
Content-Length or chunked), so one process on one core sends well over 10,000 requests/s.
The process prints one JSON line once every client is connected, then obeys commands on stdin:

    run SECONDS   every client sends requests until SECONDS have passed; prints what happened
    quit          close the connections and exit

With `results` in the options (a count), a 2xx body must be JSON whose `results` list has that
many items; other bodies count as `mismatched`.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from typing import Any

import orjson
import uvloop

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)
BUCKET_US = 100


class Round:
    """What the clients saw during one `run`."""

    def __init__(self, seconds: float, clients: int) -> None:
        self.deadline = time.perf_counter() + seconds
        self.started = time.perf_counter()
        self.finished = time.perf_counter()
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.hist: Counter[int] = Counter()
        self.mismatched = 0
        self.disconnects = 0
        self.sample = ""
        self.running = clients
        self.done = asyncio.get_running_loop().create_future()

    def client_stopped(self) -> None:
        self.running -= 1
        if self.running == 0 and not self.done.done():
            self.finished = time.perf_counter()
            self.done.set_result(True)

    def report(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": self.finished - self.started,
            "statuses": dict(self.statuses),
            "errors": sum(n for status, n in self.statuses.items() if not 200 <= status < 300) + self.disconnects,
            "disconnects": self.disconnects,
            "mismatched": self.mismatched,
            "hist": dict(self.hist),
            "sample": self.sample,
        }


class Client(asyncio.Protocol):
    """One keep-alive connection sending the same request again as soon as the answer is in."""

    def __init__(self, loader: Loader, request: bytes) -> None:
        self.loader, self.request = loader, request
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_at = 0.0
        self.round: Round | None = None
        self.connected: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.connected.done():
            self.connected.set_result(True)
        if self.round is not None:  # reconnected inside a round
            self.send()

    def start(self, round_: Round) -> None:
        self.round = round_
        self.send()

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.round is not None:
            answer = self._response()
            if answer is None:
                return
            self._answered(*answer)

    def _response(self) -> tuple[int, bytes] | None:
        """One complete response off the buffer (status, body), or None while one is incomplete."""
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end]
        status = int(head[9:12])
        length = CONTENT_LENGTH.search(head)
        start = head_end + 4
        if length is not None:
            end = start + int(length.group(1))
            if len(self.buffer) < end:
                return None
            body, self.buffer = self.buffer[start:end], self.buffer[end:]
            return status, body
        if CHUNKED.search(head):
            body, position = b"", start
            while True:
                line_end = self.buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                size = int(self.buffer[position:line_end].split(b";")[0], 16)
                if len(self.buffer) < line_end + 2 + size + 2:
                    return None
                body += self.buffer[line_end + 2 : line_end + 2 + size]
                position = line_end + 2 + size + 2
                if size == 0:
                    self.buffer = self.buffer[position:]
                    return status, body
        self.buffer = self.buffer[start:]  # no body (e.g. 204)
        return status, b""

    def _answered(self, status: int, body: bytes) -> None:
        round_ = self.round
        now = time.perf_counter()
        round_.requests += 1
        round_.statuses[status] += 1
        round_.hist[int((now - self.sent_at) * 1e6) // BUCKET_US] += 1
        expected = self.loader.results
        if 200 <= status < 300 and expected is not None:
            try:
                if len(orjson.loads(body)["results"]) != expected:
                    round_.mismatched += 1
            except (ValueError, KeyError, TypeError):
                round_.mismatched += 1
        elif not 200 <= status < 300 and not round_.sample:
            round_.sample = f"{status} {body[:200].decode('utf-8', 'replace')}"
        if now < round_.deadline:
            self.send()
        else:
            self.round = None
            round_.client_stopped()

    def connection_lost(self, exc: Exception | None) -> None:
        self.buffer = b""
        if self.round is not None and not self.loader.quitting:
            self.round.disconnects += 1
            asyncio.get_running_loop().create_task(self.loader.reconnect(self))


class Loader:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.results: int | None = options.get("results")
        self.clients = [Client(self, request.encode("latin-1")) for request in options["requests"]]
        self.quitting = False

    async def connect(self, client: Client) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(
            lambda: client, self.options["host"], self.options["port"], local_addr=(self.options["source"], 0)
        )

    async def reconnect(self, client: Client) -> None:
        try:
            await self.connect(client)
        except OSError:
            if client.round is not None:
                round_, client.round = client.round, None
                round_.client_stopped()

    async def run(self, seconds: float) -> dict[str, Any]:
        round_ = Round(seconds, len(self.clients))
        for client in self.clients:
            client.start(round_)
        await round_.done
        return round_.report()


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def main(options: dict[str, Any]) -> None:
    loader = Loader(options)
    await asyncio.gather(*(loader.connect(client) for client in loader.clients))
    emit({"connected": len(loader.clients)})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        word, _, argument = line.partition(" ")
        if word == "run":
            emit(await loader.run(float(argument)))
        elif word == "quit":
            break
    loader.quitting = True
    for client in loader.clients:
        if client.transport is not None:
            client.transport.close()


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        uvloop.run(main(json.load(file)))
