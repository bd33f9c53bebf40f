"""Live models end to end on real daphne processes (the example application examples/documents):
a document saved in a view reaches WebSocket and SSE subscribers of its channel after commit and
never after a rollback, a forbidden object channel is refused on both transports, and a snapshot
followed by a subscription `since` its position gets exactly the updates made after the snapshot
while updates run concurrently — on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.support.clients import SSEReader, WSClient
from tests.support.polling import token_for
from tests.support.server import ADMIN_HEADERS, ROOT, LiveServer, base_env, sqlite_url
from tests.support.services import create_postgres_database, drop_postgres_database

pytestmark = pytest.mark.server

SETTINGS = {"DJANGO_SETTINGS_MODULE": "tests.settings"}  # the project plus examples/documents
USERS = """
from django.contrib.auth.models import User
from examples.documents.models import Document
owner = User.objects.create_user("owner", id=501)
User.objects.create_user("stranger", id=502)
Document.objects.create(id=7001, title="secret", owner=owner, private=True)
"""


def manage(database_url: str, *args: str) -> None:
    env = base_env(database_url, **SETTINGS)
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, timeout=120)


def start(database_url: str) -> LiveServer:
    manage(database_url, "migrate", "--noinput", "-v", "0")
    manage(database_url, "shell", "-c", USERS)
    return LiveServer(database_url, CHANNEL_HISTORY_SIZE="1000", **SETTINGS).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    started = start(sqlite_url(str(tmp_path_factory.mktemp("live"))))
    yield started
    started.kill()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[LiveServer]:
    url = create_postgres_database()
    try:
        started = start(url)
        yield started
        started.kill()
    finally:
        drop_postgres_database(url)


def auth(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user_id)}"}


async def create(http: httpx.AsyncClient, server: LiveServer, title: str, folder: str = "general") -> int:
    response = await http.post(f"{server.http}/documents/", json={"title": title, "folder": folder})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def update(http: httpx.AsyncClient, server: LiveServer, pk: int, **fields) -> httpx.Response:
    return await http.post(f"{server.http}/documents/{pk}/", json=fields)


# -- delivery after commit, nothing after a rollback ----------------------------------------------


async def test_a_save_in_a_view_reaches_ws_and_sse_after_commit_and_a_rollback_never(server):
    async with httpx.AsyncClient(timeout=10) as http:
        pk = await create(http, server, "first")
        channel = f"doc:{pk}"
        sse_url = f"{server.http}/sse/connect?channels={channel},docs:general&token={token_for('502')}"
        async with WSClient(f"{server.ws}/ws/connect?token={token_for('502')}") as ws, SSEReader(sse_url) as sse:
            assert (await ws.call("subscribe", {"channel": channel, "since": 1}))["type"] == "subscribed"
            await sse.until("stream-open")  # after the replay of what the channels hold
            rolled_back = await update(http, server, pk, title="never", fail=True)
            assert rolled_back.status_code == 409
            assert (await update(http, server, pk, title="committed")).status_code == 200

            frame = await ws.recv()  # the first change a subscriber sees is the committed one
            assert (frame["type"], frame["channel"], frame["offset"]) == ("updated", channel, 2)
            assert frame["content"]["data"]["title"] == "committed"
            assert frame["content"]["model"] == "documents.document" and frame["content"]["pk"] == pk
            events = [await sse.next_event(), await sse.next_event()]
            by_channel = {event["data"]["channel"]: event for event in events}
            assert set(by_channel) == {channel, "docs:general"}
            assert by_channel[channel]["event"] == "updated"
            assert by_channel[channel]["data"]["content"]["data"]["title"] == "committed"

            assert (await http.delete(f"{server.http}/documents/{pk}/")).status_code == 200
            frame = await ws.recv()
            assert (frame["type"], frame["offset"], frame["content"]["data"]["title"]) == ("deleted", 3, "committed")
            # A deleted object's channel answers not_found to clients (it is gone); admins still read it.
            gone = await http.get(f"{server.http}/api/channels/{channel}/history/?since=0", headers=auth("502"))
            assert gone.status_code == 404 and gone.json()["type"] == "not_found"
            history = (
                await http.get(f"{server.http}/api/channels/{channel}/history/?since=0", headers=ADMIN_HEADERS)
            ).json()
            assert [m["content"]["data"]["title"] for m in history["messages"]] == ["first", "committed", "committed"]


async def test_a_forbidden_object_channel_is_refused_on_both_transports(server):
    channel = "doc:7001"  # private, owned by user 501
    async with WSClient(f"{server.ws}/ws/connect?token={token_for('502')}") as ws:
        reply = await ws.call("subscribe", {"channel": channel})
        assert (reply["type"], reply["content"]["type"]) == ("error", "forbidden")
        reply = await ws.call("snapshot", {"channel": channel})
        assert (reply["type"], reply["content"]["type"]) == ("error", "forbidden")
        reply = await ws.call("send_to_channel", {"channel": "doc:7001", "content": {"forged": True}})
        assert reply["content"]["type"] == "forbidden"
    async with WSClient(f"{server.ws}/ws/connect?token={token_for('501')}") as ws:
        assert (await ws.call("subscribe", {"channel": channel}))["type"] == "subscribed"
        snapshot = await ws.call("snapshot", {"channel": channel})
        assert snapshot["content"]["data"]["title"] == "secret"
    async with httpx.AsyncClient(timeout=10) as http:
        sse = f"{server.http}/sse/connect?channels={channel}&token="
        async with http.stream("GET", sse + token_for("502")) as refused:
            assert refused.status_code == 403
            assert (await refused.aread()) and refused.json()["type"] == "forbidden"
        async with http.stream("GET", sse + token_for("501")) as opened:
            assert opened.status_code == 200
        refused = await http.get(f"{server.http}/api/channels/{channel}/snapshot/", headers=auth("502"))
        assert refused.status_code == 403
        anonymous_list = await http.get(f"{server.http}/api/channels/docs:general/snapshot/")
        assert anonymous_list.status_code in (401, 403)


# -- snapshot, then since: no gap, no duplicate, under concurrent updates ---------------------------


UPDATERS = 3
UPDATES = 40  # each


async def snapshot_then_follow(server: LiveServer, pk: int, done: asyncio.Event) -> tuple[dict, list[dict]]:
    """Take the snapshot over HTTP, subscribe since its position, and collect every update until the
    updaters are done and the last one arrived."""
    channel = f"doc:{pk}"
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{server.http}/api/channels/{quote(channel)}/snapshot/", headers=auth("502"))
        assert response.status_code == 200, response.text
        snapshot = response.json()
    async with WSClient(f"{server.ws}/ws/connect?token={token_for('502')}") as ws:
        since = {"channel": channel, "since": snapshot["offset"], "epoch": snapshot["epoch"]}
        reply = await ws.call("subscribe", since)
        assert reply["type"] == "subscribed" and reply["content"]["recovered"] is True, reply
        received = []
        while True:
            try:
                frame = await ws.recv(timeout=2)
            except TimeoutError:
                if done.is_set():
                    return snapshot, received
                continue
            assert frame["type"] == "updated", frame
            received.append(frame)


async def concurrent_snapshots(server: LiveServer) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        pk = await create(http, server, "start", folder="race")
        done = asyncio.Event()

        async def updater(index: int) -> None:
            for n in range(UPDATES):
                response = await update(http, server, pk, title=f"u{index}-{n}")
                assert response.status_code == 200, response.text

        async def followers() -> list[tuple[dict, list[dict]]]:
            tasks = []
            for _ in range(12):  # snapshots taken at different moments of the run
                tasks.append(asyncio.create_task(snapshot_then_follow(server, pk, done)))
                await asyncio.sleep(0.1)
            return await asyncio.gather(*tasks)

        following = asyncio.create_task(followers())
        await asyncio.gather(*(updater(index) for index in range(UPDATERS)))
        done.set()
        results = await following
        url = f"{server.http}/api/channels/doc:{pk}/history/?since=0&limit=1000"
        history = (await http.get(url, headers=ADMIN_HEADERS)).json()

    titles = {m["offset"]: m["content"]["data"]["title"] for m in history["messages"]}
    head = history["offset"]
    assert head == 1 + UPDATERS * UPDATES and len(titles) == head
    taken_during_updates = 0
    for snapshot, received in results:
        offset = snapshot["offset"]
        # The snapshot shows exactly the state the message at its offset left...
        assert snapshot["data"]["title"] == titles[offset], (offset, snapshot["data"]["title"])
        # ...and the subscription delivers every later update once, in order, and nothing else.
        assert [frame["offset"] for frame in received] == list(range(offset + 1, head + 1))
        assert [frame["content"]["data"]["title"] for frame in received] == [
            titles[o] for o in range(offset + 1, head + 1)
        ]
        taken_during_updates += 1 < offset < head
    assert taken_during_updates >= 6, [snapshot["offset"] for snapshot, _ in results]


async def test_snapshot_then_since_gets_exactly_the_later_updates_on_sqlite(server):
    await concurrent_snapshots(server)


@pytest.mark.postgres
async def test_snapshot_then_since_gets_exactly_the_later_updates_on_postgresql(postgres_server):
    await concurrent_snapshots(postgres_server)


# A change committed between the position read and the data read of a snapshot: the position's
# share lock holds it back until the snapshot's transaction ends, so the snapshot shows the state
# before it at the position before it. (Without the lock it would show the change at the old
# position, and a client subscribing `since` it would get that change twice.)
INTERLEAVED = """
import threading
from django.db import connection, transaction
from examples.documents.models import Document
from streaming import live
from streaming.history import history_position

document = Document.objects.create(title="before")
channel = f"doc:{document.pk}"
committed = threading.Event()

def writer():
    with transaction.atomic():
        mine = Document.objects.select_for_update().get(pk=document.pk)
        mine.title = "after"
        mine.save()
    committed.set()
    connection.close()

def load():
    threading.Thread(target=writer).start()
    committed.wait(1.5)  # the writer commits now unless the position's lock holds it back
    return Document.objects.get(pk=document.pk).title

snapshot = live.snapshot(channel, load)
assert committed.wait(20), "the writer never committed"
print("RESULT", snapshot.offset, snapshot.data, history_position(channel)[0])
"""


@pytest.mark.postgres
def test_a_change_committing_during_a_snapshot_waits_for_it_on_postgresql(postgres_server):
    env = base_env(postgres_server.database_url, **SETTINGS)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", INTERLEAVED],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    assert result == "RESULT 1 before 2"
