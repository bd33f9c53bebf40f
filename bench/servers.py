"""The servers under test: how each is started, pinned, probed (CPU time, RSS) and stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where our server's code is taken from: another checkout (e.g. `git archive HEAD`) measures "before".
OURS_ROOT = Path(os.environ.get("BENCH_OURS_ROOT", ROOT))
WORK = Path(os.environ.get("BENCH_WORKDIR", "/tmp/realtime-bench"))
PYTHON = sys.executable
SERVER_CPUS = os.environ.get("BENCH_SERVER_CPUS", "0")
CLIENT_CPUS = os.environ.get("BENCH_CLIENT_CPUS", "1")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
API_KEY = "bench-api-key"
JWT_KEY = "bench-jwt-signing-key-0123456789abcdef"
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/realtime_bench")
PROFILE = Path(os.environ["BENCH_PROFILE"]) if os.environ.get("BENCH_PROFILE") else None
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ours_env(database_url: str | None = None, redis_url: str | None = None) -> dict[str, str]:
    """The environment of our server under the benchmark: production settings, limits raised."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "realtime_project.settings",
        "DJANGO_DEBUG": "false",  # production shape: DEBUG keeps every SQL query in memory
        "DJANGO_SECRET_KEY": "bench-django-secret-key-0123456789abcdef",
        "WS_JWT_SECRET_KEY": JWT_KEY,
        "WS_API_KEYS": API_KEY,
        "DATABASE_URL": database_url or f"sqlite:///{WORK}/bench.sqlite3",
        "WEBSOCKET_MAX_CONNECTIONS": "30000",
        "SSE_MAX_CONNECTIONS": "30000",
        "CLIENT_RATE_LIMIT": "0",  # the WS publisher sends faster than a browser may
        # thousands of clients share each load generator's source address
        "MAX_CONNECTIONS_PER_IP": "0",
        "MAX_CONNECTIONS_PER_USER": "0",
        "WEBSOCKET_HEARTBEAT_INTERVAL": "10",  # heartbeats inside the measured windows
        "SSE_HEARTBEAT_INTERVAL": "10",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    env.pop("PYTHONPATH", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=OURS_ROOT, env=env, check=True)


def reset_postgres() -> None:
    """A fresh database of our own on the local PostgreSQL (trust auth)."""
    name = PG_URL.rsplit("/", 1)[1]
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True, capture_output=True)


# ---------------------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids.extend(_descendants(int(child)))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


@dataclass
class Server:
    """A server process (or group: Pushpin runs several) pinned to the server CPUs."""

    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = ROOT
    ready_port: int | None = None
    process: subprocess.Popen | None = None
    extra_pids: list[int] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> Server:
        WORK.mkdir(parents=True, exist_ok=True)
        log_path = WORK / f"{self.name}-{self.port}.log"
        with open(log_path, "w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                ["taskset", "-c", SERVER_CPUS, *self.argv],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.ready_port or self.port), 0.5).close()
                time.sleep(0.3)
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not listen on {self.port}")

    def pids(self) -> list[int]:
        return _descendants(self.process.pid) + self.extra_pids if self.process else []

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


# ---------------------------------------------------------------------------------------------
# The servers


def ours(kind: str = "daphne", env: dict[str, str] | None = None, name: str | None = None) -> Server:
    """Our ASGI app under daphne (`make run`'s command) or uvicorn (uvloop, httptools)."""
    port = free_port()
    app = "realtime_project.asgi:application"
    if kind == "daphne":
        argv = [PYTHON, "-m", "realtime_project.server", "-b", "127.0.0.1", "-p", str(port), app]
    else:
        argv = uvicorn_argv(app, port)
    return Server(name or f"ours-{kind}", argv, port, env or ours_env(), cwd=OURS_ROOT)


def uvicorn_argv(app: str, port: int) -> list[str]:
    """uvicorn at its fastest here: uvloop, httptools, and daphne's listen queue."""
    options = ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    return [PYTHON, "-m", "uvicorn", app, *options, "--backlog", "4096", "--log-level", "warning"]


def peer_websockets() -> Server:
    port = free_port()
    return Server("websockets", [PYTHON, "-m", "bench.peers.ws_broadcast", str(port)], port)


def peer_websockets_rooms() -> Server:
    port = free_port()
    return Server("websockets", [PYTHON, "-m", "bench.peers.ws_rooms", str(port)], port)


def _daphne(name: str, app: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    return Server(
        name, [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app], port, env or dict(os.environ)
    )


def floor_django() -> Server:
    """A minimal Django async view under daphne (the HTTP publish scenario's floor A)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.peers.django_floor"}
    return _daphne("floor-django", "bench.peers.django_floor:application", env)


def floor_asgi() -> Server:
    """A bare ASGI app under daphne (floor B)."""
    return _daphne("floor-asgi", "bench.peers.asgi_floor:app")


def peer_socketio() -> Server:
    port = free_port()
    return Server("socketio", uvicorn_argv("bench.peers.socketio_room:app", port), port)


def peer_eventstream() -> Server:
    port = free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.peers.eventstream_stock"}
    argv = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "bench.peers.eventstream_stock:application"]
    return Server("eventstream", argv, port, env)


PUSHPIN_CONF = """[global]
include={libdir}/internal.conf
rundir=%(dir)s/run
ipc_prefix=bench-%(port)d-
port_offset=0
[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=%(port)d
logdir=%(dir)s/log
log_level=1
client_buffer_size=8192
client_maxconn=50000
[proxy]
routesfile=%(dir)s/routes
zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in
zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream
zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out
sig_key=bench
updates_check=off
[handler]
push_in_spec=tcp://127.0.0.1:%(pull)d
push_in_sub_specs=tcp://127.0.0.1:%(sub)d
push_in_http_addr=127.0.0.1
push_in_http_port=%(publish)d
command_spec=tcp://127.0.0.1:%(command)d
stats_spec=ipc://{rundir}/{ipc_prefix}stats
message_rate=100000
message_hwm=100000
connection_subscription_max=20
"""


def pushpin_available() -> bool:
    return shutil.which("pushpin") is not None


def peer_pushpin() -> tuple[Server, Server, int]:
    """Pushpin (all its processes) in front of a minimal GRIP origin; returns (pushpin, origin,
    publish port)."""
    origin_port, port, publish = free_port(), free_port(), free_port()
    directory = WORK / f"pushpin-{port}"
    (directory / "run").mkdir(parents=True, exist_ok=True)
    (directory / "log").mkdir(exist_ok=True)
    (directory / "routes").write_text(f"* 127.0.0.1:{origin_port}\n")
    values = {
        "dir": directory,
        "port": port,
        "publish": publish,
        "pull": free_port(),
        "sub": free_port(),
        "command": free_port(),
    }
    (directory / "pushpin.conf").write_text(PUSHPIN_CONF % values)
    origin = Server("pushpin-origin", [PYTHON, "-m", "bench.peers.pushpin_origin", str(origin_port)], origin_port)
    pushpin = Server("pushpin", ["pushpin", "--config", str(directory / "pushpin.conf")], port, cwd=directory)
    pushpin.ready_port = publish
    return pushpin, origin, publish
