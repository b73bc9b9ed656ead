"""The HTTP routes: channels CRUD + test, delivery log + replay, alerts, /metrics, X-Request-ID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mediamill.api.app import create_app
from mediamill.notify.delivery import Dispatcher
from mediamill.observability import metrics
from mediamill.runtime import Runtime
from mediamill.store import auth_repo
from mediamill.store import tables as t
from mediamill.store.timeutil import utcnow

from .support import Receiver, add_job_event, insert_job, insert_workflow, make_settings


@pytest.fixture
def rt(tmp_path: Path, sqlite_url: str) -> Iterator[Runtime]:
    runtime = Runtime(settings=make_settings(tmp_path, sqlite_url, alert_default_rules=True))
    metrics.reset_for_tests(tmp_path / "metrics")
    yield runtime
    metrics.reset_for_tests(None, wipe=False)
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt)) as c:
        yield c


def _auth(rt: Runtime, role: str, tenant: str = "default") -> dict[str, str]:
    return {"Authorization": f"Bearer {auth_repo.create_key(rt.engine, role=role, tenant_id=tenant).plaintext}"}


def test_channels_crud_and_tenancy(rt: Runtime, client: TestClient, receiver: Receiver) -> None:
    op, viewer, other = _auth(rt, "operator"), _auth(rt, "viewer"), _auth(rt, "admin", "acme")
    body = {"kind": "webhook", "name": "ci", "config": {"url": receiver.url}, "events": ["job.*"]}

    assert client.post("/v1/channels", json=body, headers=viewer).status_code == 403
    created = client.post("/v1/channels", json=body, headers=op)
    assert created.status_code == 201, created.text
    channel = created.json()
    assert channel["config"]["secrets"][0]["secret"].startswith("whsec_")
    listed = client.get("/v1/channels", headers=viewer).json()["items"]
    assert [c["id"] for c in listed] == [channel["id"]] and listed[0]["config"]["secrets"][0]["secret"].endswith("…")
    assert client.get(f"/v1/channels/{channel['id']}", headers=other).status_code == 404
    assert client.get("/v1/channels", headers=other).json()["items"] == []

    bad = client.post("/v1/channels", json={**body, "config": {"url": "http://10.1.1.1/"}}, headers=op)
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")

    patched = client.patch(f"/v1/channels/{channel['id']}", json={"enabled": False}, headers=op).json()
    assert patched["enabled"] is False
    tested = client.post(f"/v1/channels/{channel['id']}/test", headers=op).json()
    assert tested["ok"] and receiver.requests[-1].json()["type"] == "test"
    rotated = client.post(f"/v1/channels/{channel['id']}/rotate-secret", headers=op).json()
    assert len(rotated["config"]["secrets"]) == 2
    assert client.delete(f"/v1/channels/{channel['id']}", headers=op).status_code == 204
    assert client.get(f"/v1/channels/{channel['id']}", headers=op).status_code == 404


def test_delivery_log_replay_and_alerts(rt: Runtime, client: TestClient, receiver: Receiver) -> None:
    op, other = _auth(rt, "operator"), _auth(rt, "viewer", "acme")
    client.post("/v1/channels", json={"kind": "webhook", "config": {"url": receiver.url}}, headers=op)
    add_job_event(rt.engine, insert_job(rt.engine, workflow_id=insert_workflow(rt.engine)))
    dispatcher = Dispatcher(engine=rt.engine, settings=rt.settings)
    try:
        dispatcher.run_once()
        items = client.get("/v1/notifications", headers=op).json()["items"]
        assert [(i["status"], i["channel"], i["attempts"]) for i in items] == [("sent", "webhook", 1)]
        detail = client.get(f"/v1/notifications/{items[0]['id']}", headers=op).json()
        assert detail["attempt_log"][0]["status_code"] == 200 and detail["payload"]["type"] == "job.completed"
        assert client.get(f"/v1/notifications/{items[0]['id']}", headers=other).status_code == 404

        replay = client.post(f"/v1/notifications/{items[0]['id']}/replay", headers=op)
        assert replay.status_code == 202
        dispatcher.run_once()
    finally:
        dispatcher.close()
    assert receiver.count() == 2 and len(set(receiver.ids())) == 1
    events = client.get("/v1/notifications?include_events=true&status=dispatched", headers=op).json()["items"]
    assert len(events) == 1 and events[0]["kind"] == "event"
    assert "job.completed" in client.get("/v1/notifications/schemas", headers=op).json()

    with rt.engine.begin() as conn:
        conn.execute(t.alerts.insert().values(rule_name="pipeline-stopped", label_key="queue=video",
                                              labels={"queue": "video"}, severity="P1", state="firing",
                                              summary="2 jobs wait", fired_at=utcnow(), pending_since=utcnow()))
    alerts = client.get("/v1/alerts?state=firing", headers=op).json()["items"]
    assert alerts[0]["rule"] == "pipeline-stopped" and "worker" in alerts[0]["runbook"]
    rules = client.get("/v1/alerts/rules", headers=op).json()["items"]
    assert {"pipeline-stopped", "high-error-rate"} <= {r["name"] for r in rules}


def test_metrics_endpoint_request_id_and_route_labels(rt: Runtime, client: TestClient) -> None:
    op = _auth(rt, "operator")
    echoed = client.get("/v1/channels/12345", headers={**op, "X-Request-ID": "req-abc.1"})
    assert echoed.status_code == 404 and echoed.headers["x-request-id"] == "req-abc.1"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"].startswith("req_")

    scraped = client.get("/metrics")
    assert scraped.status_code == 200
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(scraped.text) for s in f.samples}
    key = ("mediamill_http_requests_total", (("method", "GET"), ("route", "/v1/channels/{channel_id}"),
                                             ("status", "404")))
    assert found[key] == 1
    assert ("mediamill_db_up", ()) in found


def test_metrics_can_require_a_key(tmp_path: Path, sqlite_url: str) -> None:
    runtime = Runtime(settings=make_settings(tmp_path, sqlite_url, metrics_require_key=True))
    try:
        with TestClient(create_app(runtime)) as c:
            assert c.get("/metrics").status_code == 401
            assert c.get("/metrics", headers=_auth(runtime, "viewer")).status_code == 200
    finally:
        runtime.close()
