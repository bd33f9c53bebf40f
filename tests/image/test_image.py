"""The container image, built from the Dockerfile and run for real (`make test-image`).

Containers share the host's network (the daemon has no bridge, see tests/support/docker.py); they
run on the host's PostgreSQL (a fresh database) and a redis-server of this module's own — Redis
pub/sub ignores database numbers, so on a Redis shared with other test runs publishes could cross.
Two containers stand behind Debian's nginx running deploy/nginx.conf, as docker-compose.yml has them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
import uuid

import httpx
import pytest
import websockets

from tests.image.conftest import production_env
from tests.support import docker
from tests.support.clients import SSEReader, WSClient
from tests.support.nginx import Nginx
from tests.support.server import ROOT, free_port
from tests.support.services import PrivateRedis, create_postgres_database, drop_postgres_database

pytestmark = [pytest.mark.image, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(900)]

API_KEY = secrets.token_urlsafe(24)
GRACE = 10  # docker stop's default grace period, and compose's


@pytest.fixture(scope="module")
def services():
    redis = PrivateRedis().start()
    database_url = create_postgres_database()
    yield {"DATABASE_URL": database_url, "REDIS_URL": redis.url}
    redis.stop()
    drop_postgres_database(database_url)


class Pair:
    """Two containers of the image behind nginx (deploy/nginx.conf); the second on a read-only root,
    as docker-compose.yml runs them, the first not, so that what its user may write shows."""

    def __init__(self, services: dict[str, str]) -> None:
        self.ports = [free_port(), free_port()]
        self.containers = [
            docker.Container(
                env=production_env(
                    PORT=str(port),
                    **services,
                    TRUSTED_PROXIES="127.0.0.1/32",
                    API_AUTH_REQUIRED="true",
                    WS_API_KEYS=API_KEY,
                ),
                read_only=read_only,
            )
            for port, read_only in zip(self.ports, (False, True), strict=True)
        ]
        self.nginx: Nginx | None = None

    def start(self) -> Pair:
        # Together on a fresh database, as compose starts app1 and app2: each migrates as it starts.
        for container in self.containers:
            container.start()
        for container in self.containers:
            container.wait_healthy()
        self.nginx = Nginx(self.ports).start()
        return self

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for container in self.containers:
            container.remove()


@pytest.fixture(scope="module")
def pair(built_image, services):
    database_url = create_postgres_database()  # fresh: both containers migrate it as they start
    pair = Pair({**services, "DATABASE_URL": database_url})
    try:
        yield pair.start()
    finally:
        pair.close()
        drop_postgres_database(database_url)


def test_the_build_context_holds_the_server_and_the_browser_library_only(daemon, tmp_path):
    """The repository's .dockerignore, applied by docker itself to a tree shaped like a developer's."""
    kept = {
        "manage.py",
        "requirements.txt",
        "realtime_project/settings.py",
        "streaming/consumers.py",
        "notifications/models.py",
        "templates/landing.html",
        "static/streaming/pages.css",
        "clients/js/src/realtime.js",
    }
    left_out = {
        ".git/HEAD",
        ".ci/run",
        ".venv/bin/python",
        ".env",
        ".reliability/autobahn/x.py",
        ".image-cache/stand-in-base-bookworm.tar",
        "db.sqlite3",
        "db.sqlite3-wal",
        "staticfiles/admin/css/base.css",
        "streaming/__pycache__/consumers.cpython-311.pyc",
        "tests/test_env.py",
        "bench/run.py",
        "docs/ws-test-page.png",
        "examples/websocket_examples.py",
        "deploy/nginx.conf",
        "README.md",
        "Makefile",
        "Dockerfile",
        "docker-compose.yml",
        "requirements-dev.txt",
        "node_modules/x/index.js",
        "clients/js/package.json",
        "clients/js/node_modules/x/index.js",
        "clients/js/src/node_modules/x/index.js",
        "clients/js/test/realtime.test.js",
        "clients/python/pyproject.toml",
        "clients/python/realtime_client/__init__.py",
    }
    context = tmp_path / "context"
    for name in kept | left_out:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(name)
    (context / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    dockerfile = tmp_path / "Dockerfile.context"
    dockerfile.write_text("FROM scratch\nCOPY . /context/\n")
    out = tmp_path / "out"
    subprocess.run(
        [docker.DOCKER, "build", "--file", str(dockerfile), "--output", f"type=local,dest={out}", str(context)],
        check=True, capture_output=True, timeout=120, env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )  # fmt: skip
    copied = {str(path.relative_to(out / "context")) for path in (out / "context").rglob("*") if path.is_file()}
    assert copied == kept


def test_the_image_holds_the_code_and_collected_static_files_but_nothing_of_the_tree_beside_them(pair):
    listing = (
        pair.containers[0].exec("sh", "-c", "cd /app && find . -maxdepth 1 && ls staticfiles/streaming").stdout.split()
    )
    for absent in ("./.git", "./tests", "./bench", "./docs", "./examples", "./.ci", "./.venv", "./db.sqlite3",
                   "./.reliability", "./deploy", "./README.md", "./Makefile", "./Dockerfile", "./.image-cache"):  # fmt: skip
        assert absent not in listing
    for present in ("./manage.py", "./realtime_project", "./streaming", "./notifications", "./templates"):
        assert present in listing
    assert "pages.css" in listing and "pages.css.gz" in listing  # collectstatic's output, compressed copies too


def test_the_image_adds_under_200_mb_to_its_base(built_image):
    added = docker.image_size(built_image.tag) - docker.image_size(built_image.base)
    assert added < 200e6, f"the image adds {added / 1e6:.0f} MB to {built_image.base}"


def test_a_production_container_becomes_healthy_by_its_own_healthcheck_on_a_read_only_root(built_image, services):
    port = free_port()
    container = docker.Container(
        env=production_env(PORT=str(port), DJANGO_ALLOWED_HOSTS="realtime.example.com", **services), read_only=True
    )
    try:
        state = container.start().wait_healthy()
        assert state["Health"]["Log"][-1]["ExitCode"] == 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            health = http.get("/healthz", headers={"Host": "realtime.example.com"})
            assert health.status_code == 200, health.text
            # 127.0.0.1 is no allowed host here: the check passes by asking as one that is.
            assert http.get("/healthz").status_code == 400
            static = http.get(
                "/static/streaming/pages.css", headers={"Host": "realtime.example.com", "Accept-Encoding": "gzip"}
            )
            assert static.status_code == 200 and static.headers["content-encoding"] == "gzip"
    finally:
        container.remove()


def test_the_server_runs_as_a_user_that_cannot_write_its_code(pair):
    container = pair.containers[0]
    assert container.exec("id", "-u").stdout.strip() != "0"
    server_uids = [
        line for line in container.exec("cat", "/proc/1/status").stdout.splitlines() if line.startswith("Uid:")
    ]
    assert server_uids and "0" not in server_uids[0].split()[1:], server_uids  # PID 1 is the server
    attempt = container.exec(
        "python", "-c",
        "import os\n"
        "for path in ('/app/manage.py', '/app/realtime_project/settings.py', '/app/staticfiles/streaming/pages.css',"
        " '/opt/venv/bin/python', '/opt/venv/pyvenv.cfg'):\n"
        "    try: open(path, 'a').close(); print('wrote', path)\n"
        "    except PermissionError: pass\n"
        "for path in ('/app/new', '/app/streaming/new', '/opt/venv/new'):\n"
        "    try: os.mkdir(path); print('made', path)\n"
        "    except PermissionError: pass\n",
    )  # fmt: skip
    assert attempt.returncode == 0 and attempt.stdout == "", attempt.stdout + attempt.stderr
    # owned by root and writable by nobody else, every file and directory of the code and its environment
    others = container.exec("find", "/app", "/opt/venv", "!", "-type", "l", "(", "!", "-user", "0", "-o", "-perm",
                            "/022", ")")  # fmt: skip
    assert others.returncode == 0 and others.stdout == "", others.stdout[:2000]


async def test_a_publish_on_one_container_reaches_websocket_and_sse_clients_of_the_other(pair):
    channel = f"image-{uuid.uuid4().hex[:8]}"
    headers = {"X-API-Key": API_KEY}
    sockets = [await WSClient(pair.nginx.ws + "/ws/connect").__aenter__() for _ in range(4)]
    streams = [await SSEReader(pair.nginx.http + f"/sse/connect?channels={channel}").__aenter__() for _ in range(4)]
    try:
        for ws in sockets:
            assert (await ws.call("subscribe", {"channel": channel}))["type"] == "subscribed"
        for stream in streams:
            await stream.until("stream-open")
        async with httpx.AsyncClient(timeout=10, headers=headers) as http:
            await asyncio.sleep(1.5)  # the registry's flush
            listed = (await http.get(pair.nginx.http + f"/ws/connections?channel={channel}&page_size=100")).json()
            assert len({c["process"] for c in listed["results"]}) == 2  # nginx spread the clients over both
            for n, port in enumerate(pair.ports):  # a publish on each container, straight to it
                response = await http.post(
                    f"http://127.0.0.1:{port}/ws/send-to-channel",
                    json={"channel": channel, "message": {"content": f"from container {n}"}},
                )
                assert response.status_code == 202, response.text
        expected = ["from container 0", "from container 1"]
        for ws in sockets:
            assert sorted([(await ws.recv())["content"] for _ in expected]) == expected
        for stream in streams:
            assert sorted([(await stream.next_event())["data"]["content"] for _ in expected]) == expected
    finally:
        for ws in sockets:
            await ws.socket.close()
        for stream in streams:
            await stream.__aexit__(None, None, None)


async def test_docker_stop_closes_websockets_1001_ends_sse_streams_and_exits_within_the_grace_period(pair):
    container, port = pair.containers[1], pair.ports[1]
    channel = f"stop-{uuid.uuid4().hex[:8]}"
    async with (
        WSClient(f"ws://127.0.0.1:{port}/ws/connect") as ws,
        SSEReader(f"http://127.0.0.1:{port}/sse/connect?channels={channel}") as sse,
    ):
        await ws.call("subscribe", {"channel": channel})
        await sse.until("stream-open")
        took = await asyncio.to_thread(container.stop, GRACE)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        error = await sse.until("stream-error")
        assert error["data"]["condition"] == "shutdown"
    state = container.state()
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, container.logs()[-3000:])  # 137: SIGKILLed
    assert took < GRACE, f"docker stop took {took:.1f} s"


def test_in_production_without_secrets_it_refuses_to_start_with_one_line(built_image):
    started = time.monotonic()
    result = docker.docker(
        "run", "--rm", "--network", "none", "--env", "DJANGO_DEBUG=false", built_image.tag, check=False, timeout=60
    )  # fmt: skip
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 2, lines
    assert lines == ["configuration error: DJANGO_SECRET_KEY=None: expected a secret key when DJANGO_DEBUG=false"]
    assert time.monotonic() - started < 30
