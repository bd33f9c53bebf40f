"""Operations endpoints: /healthz and /metrics."""

from __future__ import annotations

import httpx
import pytest

from tests.support.clients import WSClient

pytestmark = pytest.mark.django_db


def test_healthz_checks_database_and_bus(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "bus": "ok", "registry": "ok"}}


def test_healthz_reports_a_broken_bus(client, monkeypatch):
    from realtime_project import views

    async def broken() -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(views, "_bus_check", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "bus": "error: ConnectionError", "registry": "ok"}


def test_metrics_need_an_admin_when_api_auth_is_required(client, realtime):
    realtime(api_auth_required=True, ws_api_keys=("metrics-key",))
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401 and anonymous.json()["type"] == "unauthenticated"
    assert client.get("/metrics?token=garbage").status_code == 401
    from streaming.auth import authenticator

    user_token = authenticator.create_access_token({"sub": "u1"})
    assert client.get(f"/metrics?token={user_token}").status_code == 403
    assert client.get("/metrics?api_key=metrics-key").status_code == 200


@pytest.mark.server
async def test_metrics_count_connections_publishes_deliveries_and_latency(live_server_factory):
    server = live_server_factory()
    async with WSClient(server.ws + "/ws/connect") as ws, httpx.AsyncClient() as http:
        await ws.call("subscribe", {"channel": "metered"})
        for _ in range(3):
            await http.post(server.http + "/ws/send-to-channel", json={"channel": "metered", "message": {"content": 1}})
            await ws.recv()
        await http.get(server.http + "/sse/connect?token=bad")
        import asyncio

        await asyncio.sleep(1.2)  # the registry tick exports gauges and delivery counts
        text = (await http.get(server.http + "/metrics")).text
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert lines['realtime_connections{transport="ws"}'] == 1
    assert lines["realtime_subscriptions"] == 1
    assert lines['realtime_messages_published_total{persisted="false"}'] == 3
    assert lines['realtime_messages_delivered_total{transport="ws"}'] == 3
    assert lines["realtime_publish_to_deliver_seconds_count"] == 3
    assert lines['realtime_auth_failures_total{transport="sse"}'] == 1
