"""The clients' one-call snapshot then subscription (`subscribe_with_snapshot`) against a real daphne
process running the example application (examples/documents, settings `tests.settings`): while
documents are updated concurrently, the snapshot's data plus the updates received after it are
exactly the sequence of titles the channel's history holds — no gap, no duplicate — over
WebSocket and over SSE, for an object channel and for a list channel; refusals raise the
clients' typed errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from realtime_client import ReplyError, SSEClient, WebSocketClient

from tests.support.polling import token_for
from tests.support.server import ADMIN_HEADERS, ROOT, LiveServer, base_env, sqlite_url

pytestmark = pytest.mark.server

SETTINGS = {"DJANGO_SETTINGS_MODULE": "tests.settings"}  # the project plus examples/documents
OWNER, READER = "601", "602"
USERS = f"""
from django.contrib.auth.models import User
from examples.documents.models import Document
owner = User.objects.create_user("owner", id={OWNER})
User.objects.create_user("reader", id={READER})
Document.objects.create(id=8001, title="secret", owner=owner, private=True)
"""
UPDATERS, UPDATES = 3, 20  # concurrent writers of one document, updates each
QUIET = 1.5  # seconds without a message after the writers are done: everything has arrived


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    url = sqlite_url(str(tmp_path_factory.mktemp("snapshots")))
    env = base_env(url, **SETTINGS)
    for command in (["migrate", "--noinput", "-v", "0"], ["shell", "-c", USERS]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, timeout=120)
    started = LiveServer(url, CHANNEL_HISTORY_SIZE="1000", **SETTINGS).start()
    yield started
    started.kill()


async def create(http: httpx.AsyncClient, server: LiveServer, title: str, folder: str = "general") -> int:
    response = await http.post(f"{server.http}/documents/", json={"title": title, "folder": folder})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def history(http: httpx.AsyncClient, server: LiveServer, channel: str) -> dict[str, Any]:
    response = await http.get(
        f"{server.http}/api/channels/{channel}/history/?since=0&limit=1000", headers=ADMIN_HEADERS
    )
    assert response.status_code == 200, response.text
    return response.json()


async def follow(client: WebSocketClient | SSEClient, channel: str, done: asyncio.Event) -> tuple[dict, list[dict]]:
    """subscribe_with_snapshot, then collect the channel's envelopes until the writers are done and
    the channel has been quiet for a while."""
    stream = client.messages()  # made first: it gets every envelope delivered after the call
    snapshot = await client.subscribe_with_snapshot(channel)
    received = []
    while True:
        try:
            envelope = await asyncio.wait_for(anext(stream), QUIET)
        except TimeoutError:
            if done.is_set():
                return snapshot, received
            continue
        if envelope["channel"] == channel:
            received.append(envelope)


def client_of(make_client, kind: str, server: LiveServer) -> WebSocketClient | SSEClient:
    return make_client(WebSocketClient if kind == "ws" else SSEClient, server, token=token_for(READER))


@pytest.mark.parametrize("kind", ["ws", "sse"])
async def test_snapshot_then_updates_are_exactly_the_document_titles_in_order_under_concurrent_writers(
    server, make_client, kind
):
    async with httpx.AsyncClient(timeout=30) as http:
        pk = await create(http, server, "start", folder=f"race-{kind}")
        channel = f"doc:{pk}"
        clients = [client_of(make_client, kind, server) for _ in range(4)]
        for client in clients:
            await client.connect()
        done = asyncio.Event()

        async def writer(index: int) -> None:
            for n in range(UPDATES):
                response = await http.post(f"{server.http}/documents/{pk}/", json={"title": f"w{index}-{n}"})
                assert response.status_code == 200, response.text

        async def followers() -> list[tuple[dict, list[dict]]]:
            tasks = []
            for client in clients:  # snapshots taken at different moments of the writing
                tasks.append(asyncio.create_task(follow(client, channel, done)))
                await asyncio.sleep(0.2)
            return await asyncio.gather(*tasks)

        following = asyncio.create_task(followers())
        await asyncio.gather(*(writer(index) for index in range(UPDATERS)))
        done.set()
        results = await following
        log = await history(http, server, channel)

    titles = {message["offset"]: message["content"]["data"]["title"] for message in log["messages"]}
    head = log["offset"]
    assert head == 1 + UPDATERS * UPDATES and sorted(titles) == list(range(1, head + 1))
    sequence = [titles[offset] for offset in range(1, head + 1)]
    taken_while_writing = 0
    for client, (snapshot, received) in zip(clients, results, strict=True):
        offset = snapshot["offset"]
        assert snapshot["channel"] == channel and snapshot["epoch"] == log["epoch"]
        # What the snapshot shows, then what followed it: the whole sequence from there, once each.
        shown = [snapshot["data"]["title"]] + [envelope["content"]["data"]["title"] for envelope in received]
        assert shown == sequence[offset - 1 :], (kind, offset)
        assert [envelope["offset"] for envelope in received] == list(range(offset + 1, head + 1))
        assert all(envelope["type"] == "updated" for envelope in received)
        if kind == "ws":
            assert (client.offsets[channel], client.epochs[channel]) == (head, log["epoch"])
        else:
            assert client.positions[channel] == (head, log["epoch"])
            assert client.channels == [channel]
        taken_while_writing += 1 < offset < head
    assert taken_while_writing >= 2, [snapshot["offset"] for snapshot, _ in results]


async def test_a_list_snapshot_then_created_events_hold_every_document_of_the_folder_once(server, make_client):
    folder = f"list-{uuid.uuid4().hex[:6]}"
    channel = f"docs:{folder}"
    async with httpx.AsyncClient(timeout=30) as http:
        client = client_of(make_client, "ws", server)
        await client.connect()
        done = asyncio.Event()
        created: list[int] = []

        async def creator(index: int) -> None:
            for n in range(15):
                created.append(await create(http, server, f"c{index}-{n}", folder=folder))

        async def follower() -> tuple[dict, list[dict]]:
            await asyncio.sleep(0.3)  # some documents exist before the snapshot, more come after it
            return await follow(client, channel, done)

        following = asyncio.create_task(follower())
        await asyncio.gather(*(creator(index) for index in range(3)))
        done.set()
        snapshot, received = await following

    listed = [item["id"] for item in snapshot["data"]]
    later = [envelope["content"]["pk"] for envelope in received]
    assert snapshot["has_more"] is False
    assert listed and later, "the snapshot was taken while documents were being created"
    assert all(envelope["type"] == "created" for envelope in received)
    assert sorted(listed + later) == sorted(created), "every document once: none missed, none twice"


@pytest.mark.parametrize("kind", ["ws", "sse"])
async def test_refused_snapshots_raise_the_typed_error_and_subscribe_to_nothing(server, make_client, kind):
    client = client_of(make_client, kind, server)
    await client.connect()
    with pytest.raises(ReplyError) as forbidden:
        await client.subscribe_with_snapshot("doc:8001")  # private, owned by another user
    with pytest.raises(ReplyError) as missing:
        await client.snapshot("doc:999999")
    assert (forbidden.value.code, missing.value.code) == ("forbidden", "not_found")
    if kind == "sse":
        assert (forbidden.value.status, missing.value.status) == (403, 404)
    assert client.channels == []

    owner = client_of(make_client, kind, server)
    owner.endpoint.token = token_for(OWNER)
    await owner.connect()
    snapshot = await owner.subscribe_with_snapshot("doc:8001")
    assert snapshot["data"]["title"] == "secret" and snapshot["offset"] == 1
    assert owner.channels == ["doc:8001"]
