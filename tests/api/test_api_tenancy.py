"""Two tenants share queues, workers and alert machinery: each sees only its own share of them,
and only the root admin touches what is shared (API routes and the dashboard pages)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.runtime import Runtime
from mediamill.store import auth_repo, workflow_repo
from mediamill.store.tables import alert_rules, alerts, circuit_breakers, queues, workers
from mediamill.store.timeutil import utcnow
from mediamill.workflows.loader import validate_document

ALPHA_WF = {"code": "WF-ALPHA", "name": "alpha's", "type": "generic", "queue": "alpha-q",
            "input_types": ["text/plain"], "steps": [{"name": "a", "action": "noop"}]}
BETA_WF = {"code": "WF-BETA", "name": "beta's", "type": "generic", "queue": "beta-q",
           "input_types": ["image/png"], "steps": [{"name": "a", "action": "noop"}]}


@dataclass
class Tenant:
    admin: str
    operator: str
    viewer: str

    def h(self, role: str = "viewer") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


def _tenant(rt: Runtime, tenant: str) -> Tenant:
    mk = auth_repo.create_key
    return Tenant(*(mk(rt.engine, role=r, tenant_id=tenant).plaintext for r in ("admin", "operator", "viewer")))


@pytest.fixture
def world(rt: Runtime) -> Iterator[tuple[TestClient, dict[str, Tenant]]]:
    """Tenants alpha and beta with a workflow (and queue) each, jobs of both in their own and in the
    shared "test" queue, a worker serving all of them, alerts of each tenant's rule and of a built-in one."""
    with rt.engine.begin() as conn:
        workflow_repo.save_version(conn, validate_document(ALPHA_WF), author="alpha", tenant_id="alpha")
        workflow_repo.save_version(conn, validate_document(BETA_WF), author="beta", tenant_id="beta")
    tenants = {"alpha": _tenant(rt, "alpha"), "beta": _tenant(rt, "beta"), "default": _tenant(rt, "default")}
    with TestClient(create_app(rt)) as client:
        for name, code in (("alpha", "WF-ALPHA"), ("alpha", "WF-TEST-NOOP"), ("beta", "WF-TEST-NOOP"),
                           ("beta", "WF-TEST-NOOP")):
            res = client.post("/v1/jobs", headers=tenants[name].h("operator"), data={"workflow": code},
                              files={"file": ("a.txt", io.BytesIO(b"hello world"))})
            assert res.status_code == 202, res.text
        _machinery(rt)
        yield client, tenants


def _machinery(rt: Runtime) -> None:
    now = utcnow()
    with rt.engine.begin() as conn:
        conn.execute(workers.insert(), [
            {"id": "w-all", "hostname": "host-a", "pid": 11, "pools": {"alpha-q": 1, "beta-q": 1, "test": 2},
             "status": "running", "started_at": now, "heartbeat_at": now, "jobs_done": 1234},
            {"id": "w-beta", "hostname": "host-b", "pid": 12, "pools": {"beta-q": 4}, "status": "running",
             "started_at": now, "heartbeat_at": now, "jobs_done": 99}])
        conn.execute(alert_rules.insert(), [
            {"tenant_id": "alpha", "name": "alpha-depth", "kind": "queue_depth", "params": {"queue": "alpha-q"}},
            {"tenant_id": "beta", "name": "beta-depth", "kind": "queue_depth", "params": {"queue": "beta-q"}}])
        conn.execute(alerts.insert(), [
            {"rule_name": name, "labels": {"queue": q}, "label_key": f"queue={q}", "severity": "P2",
             "state": "firing", "summary": f"{q} is deep", "fired_at": now, "pending_since": now}
            for name, q in (("alpha-depth", "alpha-q"), ("beta-depth", "beta-q"), ("pipeline-stopped", "video"))])
        conn.execute(circuit_breakers.insert().values(action="transcode_video", state="open", failure_count=5,
                                                      last_error="alpha-secret-launch.mov: moov atom not found"))


def _queues(client: TestClient, headers: dict[str, str]) -> dict[str, dict]:
    res = client.get("/v1/queues", headers=headers)
    assert res.status_code == 200
    return {q["name"]: q for q in res.json()["items"]}


def test_queues_show_the_tenants_own_queues_and_figures(world) -> None:
    client, t = world
    alpha, beta = _queues(client, t["alpha"].h()), _queues(client, t["beta"].h())
    root = _queues(client, t["default"].h())
    assert "alpha-q" in alpha and "beta-q" not in alpha
    assert "beta-q" in beta and "alpha-q" not in beta
    assert {"alpha-q", "beta-q", "test"} <= set(root)
    assert "image_processing" in alpha and "image_processing" in beta  # built-in workflows: visible to all
    assert alpha["test"]["depth"] == 1 and beta["test"]["depth"] == 2 and root["test"]["depth"] == 3
    assert alpha["alpha-q"]["depth"] == 1 and root["alpha-q"]["depth"] == 1


def _paused(rt: Runtime, name: str) -> bool:
    with rt.engine.connect() as conn:
        return bool(conn.execute(sa.select(queues.c.paused).where(queues.c.name == name)).scalar())


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_pausing_own_shared_and_foreign_queues(world, rt: Runtime, action: str) -> None:
    client, t = world
    post = lambda q, who, role: client.post(f"/v1/queues/{q}/{action}", headers=t[who].h(role)).status_code  # noqa: E731
    for role in ("operator", "admin"):
        assert post("alpha-q", "beta", role) == 404  # another tenant's queue does not exist for beta
        assert post("image_processing", "beta", role) == 403  # shared by a built-in workflow
        assert post("test", "alpha", role) == 403  # shared by test workflows (no tenant)
    assert post("image_processing", "default", "operator") == 403  # shared: the root admin only
    assert post("alpha-q", "alpha", "viewer") == 403
    if action == "pause":
        assert not _paused(rt, "image_processing") and not _paused(rt, "alpha-q")
    assert post("alpha-q", "alpha", "operator") == 200  # alpha owns it
    assert post("image_processing", "default", "admin") == 200
    assert post("alpha-q", "default", "admin") == 200
    assert _paused(rt, "alpha-q") is (action == "pause")


def test_workers_show_only_the_tenants_pools(world) -> None:
    client, t = world
    alpha = {w["id"]: w for w in client.get("/v1/workers", headers=t["alpha"].h()).json()["items"]}
    beta = {w["id"]: w for w in client.get("/v1/workers", headers=t["beta"].h()).json()["items"]}
    root = {w["id"]: w for w in client.get("/v1/workers", headers=t["default"].h()).json()["items"]}
    assert set(alpha) == {"w-all"} and alpha["w-all"]["pools"] == {"alpha-q": 1, "test": 2}
    assert set(beta) == {"w-all", "w-beta"} and beta["w-all"]["pools"] == {"beta-q": 1, "test": 2}
    for seen in (alpha["w-all"], beta["w-beta"]):
        assert seen["jobs_done"] is None and seen["hostname"] is None and seen["pid"] is None
    assert root["w-all"]["pools"] == {"alpha-q": 1, "beta-q": 1, "test": 2} and root["w-all"]["jobs_done"] == 1234


def test_alerts_and_rules_are_the_tenants_own(world) -> None:
    client, t = world
    names = lambda who, path: {a.get("rule") or a.get("name")  # noqa: E731
                               for a in client.get(path, headers=t[who].h()).json()["items"]}
    assert names("alpha", "/v1/alerts") == {"alpha-depth"}
    assert names("beta", "/v1/alerts?state=firing") == {"beta-depth"}
    assert {"alpha-depth", "beta-depth", "pipeline-stopped"} <= names("default", "/v1/alerts")
    assert names("alpha", "/v1/alerts/rules") == {"alpha-depth"}
    assert {"alpha-depth", "beta-depth", "pipeline-stopped"} <= names("default", "/v1/alerts/rules")


def test_breakers_hide_other_tenants_errors_and_only_root_resets(world) -> None:
    client, t = world
    beta = client.get("/v1/breakers", headers=t["beta"].h()).json()["items"]
    assert beta[0]["state"] == "open" and beta[0]["last_error"] is None
    assert "alpha-secret" in client.get("/v1/breakers", headers=t["default"].h()).json()["items"][0]["last_error"]
    assert client.post("/v1/breakers/transcode_video/reset", headers=t["beta"].h("admin")).status_code == 403
    assert client.post("/v1/breakers/transcode_video/reset", headers=t["default"].h("operator")).status_code == 403
    assert client.post("/v1/breakers/transcode_video/reset", headers=t["default"].h("admin")).status_code == 200


def test_creating_another_tenants_workflow_code_answers_like_get(world) -> None:
    client, t = world
    doc = {**ALPHA_WF, "name": "beta's copy"}
    got = client.get("/v1/workflows/WF-ALPHA", headers=t["beta"].h("admin"))
    created = client.post("/v1/workflows", headers=t["beta"].h("admin"), json=doc)
    assert got.status_code == created.status_code == 404
    assert created.json() == got.json()
    assert client.get("/v1/workflows/WF-ALPHA", headers=t["alpha"].h()).json()["definition"]["name"] == "alpha's"
    # a code the caller can see still conflicts, and a fresh one is created
    assert client.post("/v1/workflows", headers=t["beta"].h("admin"), json={**ALPHA_WF, "code": "WF-TEST-NOOP"}
                       ).status_code == 409
    assert client.post("/v1/workflows", headers=t["beta"].h("admin"), json={**ALPHA_WF, "code": "WF-BETA-2"}
                       ).status_code == 201


def test_auto_routing_never_picks_another_tenants_workflow(world) -> None:
    client, t = world
    res = client.post("/v1/jobs", headers=t["beta"].h("operator"), data={"workflow": "auto"},
                      files={"file": ("a.txt", io.BytesIO(b"plain text only alpha's workflow accepts"))})
    assert res.status_code == 202 and res.json()["workflow"] != "WF-ALPHA"
    res = client.post("/v1/jobs", headers=t["alpha"].h("operator"), data={"workflow": "auto"},
                      files={"file": ("a.txt", io.BytesIO(b"plain text only alpha's workflow accepts"))})
    assert res.json()["workflow"] == "WF-ALPHA"


def _dashboard(client: TestClient, key: str) -> TestClient:
    page = TestClient(client.app)
    form = page.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    assert page.post("/login", data={"key": key, "csrf_token": token, "next": "/"},
                     follow_redirects=False).status_code == 303
    return page


def test_dashboard_pages_show_the_tenants_share_only(world) -> None:
    client, t = world
    beta = _dashboard(client, t["beta"].operator)
    queues_page = beta.get("/queues").text
    assert 'data-queue="beta-q"' in queues_page and "alpha-q" not in queues_page
    assert "shared: the root admin pauses it" in queues_page  # no Pause button on image_processing
    assert "/v1/queues/beta-q/pause" in queues_page and "/v1/queues/image_processing/pause" not in queues_page
    workers_page = beta.get("/workers").text
    assert "beta-q" in workers_page and "alpha-q" not in workers_page and "host-a" not in workers_page
    alerts_page = beta.get("/alerts").text
    assert "beta-depth" in alerts_page and "alpha-depth" not in alerts_page and "pipeline-stopped" not in alerts_page
    overview = beta.get("/").text
    assert "alpha-q" not in overview and "alpha-depth" not in overview
    assert "alpha-secret" not in beta.get("/breakers").text
    root = _dashboard(client, t["default"].admin)
    assert "alpha-q" in root.get("/queues").text and "alpha-depth" in root.get("/alerts").text
