"""Starting a process's runtime before connections arrive (`streaming.runtime.warm_up`)."""

from __future__ import annotations

import asyncio

import pytest

from streaming import runtime as runtime_module

pytestmark = pytest.mark.django_db(transaction=True)


async def test_lifespan_startup_starts_the_runtime_before_it_reports_complete(ws_app):
    sent: list[dict] = []
    messages = asyncio.Queue()
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        messages.put_nowait(message)

    async def send(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            assert runtime_module.get_runtime()._started  # started before the server takes clients
        sent.append(message)

    await ws_app({"type": "lifespan", "asgi": {"version": "3.0"}}, messages.get, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_warm_up_reports_a_failure_and_leaves_the_start_to_the_first_connection(ws_app, monkeypatch, caplog):
    async def bus_down(self):
        raise ConnectionRefusedError("bus down")

    monkeypatch.setattr(runtime_module.Hub, "start", bus_down)
    assert await runtime_module.warm_up() is False
    assert "runtime not started at start-up (ConnectionRefusedError: bus down)" in caplog.text
    assert not runtime_module.get_runtime()._started
    monkeypatch.undo()
    assert (await runtime_module.start_runtime())._started


async def test_warm_up_gives_up_after_its_timeout(ws_app, monkeypatch):
    async def bus_hangs(self):
        await asyncio.sleep(60)

    monkeypatch.setattr(runtime_module.Hub, "start", bus_hangs)
    assert await runtime_module.warm_up(timeout=0.1) is False
