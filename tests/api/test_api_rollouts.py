"""Staged rollouts (canary, with its guard) and shadow runs (with the comparison report) over HTTP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from mediamill.api.app import create_app
from mediamill.engine import rollouts
from mediamill.engine.worker import Worker
from mediamill.notify import channels as ch
from mediamill.notify.render import EventContext, subject, summary_line
from mediamill.notify.runner import Notifier
from mediamill.runtime import Runtime
from mediamill.store import auth_repo, workflow_repo
from mediamill.store.tables import job_events, workflow_jobs, workflow_notifications
from mediamill.workflows.loader import validate_document
from tests.notify.support import Receiver

from .backends import BACKENDS, runtime_on
from .support import Keys, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=BACKENDS)
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """The API tests' runtime, once on SQLite and once on PostgreSQL."""
    yield from runtime_on(request.param, tmp_path / "data")
FINAL = ("completed", "partial", "failed", "cancelled")


def save(rt: Runtime, doc: dict[str, Any], *, activate: bool = True) -> int:
    with rt.engine.begin() as conn:
        return workflow_repo.save_version(conn, validate_document(doc), author="tests", activate=activate).version


def noop_doc(code: str, step: str = "Nothing", action: str = "noop", **params: Any) -> dict[str, Any]:
    return {"code": code, "name": code, "type": "generic", "queue": "test", "retry_count": 0,
            "steps": [{"name": step, "action": action, **({"params": params} if params else {})}]}


def post_job(client: TestClient, key: str, workflow: str, data: bytes = b"hello\n", name: str = "x.txt",
             **extra: str) -> dict[str, Any]:
    res = client.post("/v1/jobs", files={"file": (name, data)}, data={"workflow": workflow, **extra},
                      headers=Keys.h(key))
    assert res.status_code == 202, res.text
    return dict(res.json())


def finished(rt: Runtime, ids: list[int]) -> bool:
    with rt.engine.connect() as conn:
        got = conn.execute(sa.select(workflow_jobs.c.status).where(workflow_jobs.c.id.in_(ids))).scalars().all()
    return len(got) == len(ids) and all(s in FINAL for s in got)


# ------------------------------------------------------------------------------ canary
def test_rollout_splits_deterministically_and_promotes(rt: Runtime, client: TestClient, keys: Keys) -> None:
    save(rt, noop_doc("WF-TEST-NOOP", "Nothing at all"), activate=False)  # v2, not active
    op = Keys.h(keys.admin)  # the test workflows are shared: only an admin changes them
    assert client.post("/v1/workflows/WF-TEST-NOOP/rollout", json={"version": 1, "percent": 50},
                       headers=op).status_code == 409  # already the active version
    assert client.post("/v1/workflows/WF-TEST-NOOP/rollout", json={"version": 9, "percent": 50},
                       headers=op).status_code == 404
    assert client.post("/v1/workflows/WF-TEST-NOOP/rollout", json={"version": 2, "percent": 0},
                       headers=op).status_code == 422
    res = client.post("/v1/workflows/WF-TEST-NOOP/rollout", json={"version": 2, "percent": 50}, headers=op)
    assert res.status_code == 200, res.text
    rollout = res.json()
    assert rollout["state"] == "active" and rollout["base_version"] == 1

    jobs = [post_job(client, keys.submitter, "WF-TEST-NOOP") for _ in range(40)]
    on_candidate = [j for j in jobs if j["workflow_version"] == 2]
    assert 8 <= len(on_candidate) <= 32
    for j in jobs:  # the pick is a function of the rollout and the job id
        assert (j["workflow_version"] == 2) == rollouts.picked(rollout, j["id"])
    other = post_job(client, keys.other, "WF-TEST-NOOP")  # another tenant is not in this rollout
    assert other["workflow_version"] == 1

    status = client.get("/v1/workflows/WF-TEST-NOOP/rollout", headers=Keys.h(keys.viewer)).json()
    assert status["figures"]["2"]["jobs"] == len(on_candidate) and status["figures"]["1"]["jobs"] == 40 - len(
        on_candidate)
    assert client.get("/v1/workflows/WF-TEST-NOOP/rollout", headers=Keys.h(keys.other)).json()["rollout"] is None

    promoted = client.post("/v1/workflows/WF-TEST-NOOP/rollout/promote", headers=op)
    assert promoted.status_code == 200 and promoted.json()["state"] == "promoted"
    assert client.get("/v1/workflows/WF-TEST-NOOP", headers=op).json()["current_version"] == 2
    assert post_job(client, keys.submitter, "WF-TEST-NOOP")["workflow_version"] == 2
    assert client.delete("/v1/workflows/WF-TEST-NOOP/rollout", headers=op).status_code == 404  # nothing active
    with rt.engine.connect() as conn:
        kinds = conn.execute(sa.select(workflow_notifications.c.event_type)
                             .where(workflow_notifications.c.event_type.like("rollout.%"))).scalars().all()
    assert kinds == ["rollout.promoted"]


def test_guard_aborts_a_candidate_whose_step_always_fails(rt: Runtime, client: TestClient, keys: Keys) -> None:
    save(rt, noop_doc("WF-TEST-CANARY"))
    save(rt, noop_doc("WF-TEST-CANARY", "Boom", "fail", error_class="invalid_input"), activate=False)
    op = Keys.h(keys.admin)  # the test workflows are shared: only an admin changes them
    res = client.post("/v1/workflows/WF-TEST-CANARY/rollout", headers=op, json={
        "version": 2, "percent": 50, "guard": {"max_failure_delta": 0.2, "min_jobs": 4}})
    assert res.status_code == 200 and res.json()["guard"] == {"max_failure_delta": 0.2, "min_jobs": 4}
    worker = Worker(rt, pools={"*": 2}).start()
    try:
        ids = [post_job(client, keys.submitter, "WF-TEST-CANARY")["id"] for _ in range(24)]
        wait_until(lambda: finished(rt, ids), timeout=60, message="canary jobs finished")
        wait_until(lambda: client.get("/v1/workflows/WF-TEST-CANARY/rollout", headers=op).json()["rollout"]["state"]
                   == "aborted", timeout=20, message="the guard aborts the rollout")
    finally:
        worker.stop(grace=10)
    status = client.get("/v1/workflows/WF-TEST-CANARY/rollout", headers=op).json()
    assert "candidate failure rate 100.0%" in status["rollout"]["end_reason"]
    assert status["figures"]["2"]["failure_rate"] == 1.0 and status["figures"]["1"]["failure_rate"] == 0.0
    assert status["figures"]["2"]["failures_by_class"] == {"invalid_input": status["figures"]["2"]["failed"]}
    with rt.engine.connect() as conn:
        notes = conn.execute(sa.select(workflow_notifications.c.payload)
                             .where(workflow_notifications.c.event_type == "rollout.aborted")).scalars().all()
        events = conn.execute(sa.select(job_events.c.data).where(job_events.c.event_type == "rollout")).scalars().all()
    assert len(notes) == 1 and notes[0]["data"]["workflow_code"] == "WF-TEST-CANARY"
    assert subject(notes[0], EventContext()) == "Rollout aborted: WF-TEST-CANARY v2"
    assert "candidate failure rate" in summary_line(notes[0], EventContext())
    assert any(e["state"] == "aborted" and e["by"] == "guard" for e in events)
    after = [post_job(client, keys.submitter, "WF-TEST-CANARY")["workflow_version"] for _ in range(10)]
    assert after == [1] * 10  # nothing goes to the candidate any more


# ------------------------------------------------------------------------------ shadow
THUMBS = {"code": "WF-TEST-THUMBS", "name": "thumbnails", "type": "image", "queue": "test",
          "input_types": ["image/png", "image/jpeg"],
          "steps": [{"name": "Thumb", "action": "create_thumbnail", "params": {"size": 64}},
                    {"name": "Tell", "action": "http_request", "params": {"url": "http://127.0.0.1:9/never"},
                     "on_failure": "continue"}]}


@pytest.fixture(params=BACKENDS)
def hooked(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Runtime, Receiver]]:
    receiver = Receiver()
    yield from ((runtime, receiver) for runtime in runtime_on(
        request.param, tmp_path / "hooked", url_allowlist="127.0.0.1", notify_poll_seconds=0.05,
        notify_backoff_base_seconds=0.1, notify_backoff_max_seconds=0.3))
    receiver.server.shutdown()


def image(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (160, 120), color).save(buf, "PNG")
    return buf.getvalue()


def test_shadow_runs_are_invisible_silent_and_compared(hooked: tuple[Runtime, Receiver]) -> None:
    rt, receiver = hooked
    auth_repo.clear_cache()
    keys = Keys(rt)
    primary_doc = {**THUMBS, "steps": [THUMBS["steps"][0]]}
    save(rt, primary_doc)
    candidate = {**THUMBS, "steps": [{**THUMBS["steps"][0], "params": {"size": 48}}, THUMBS["steps"][1]]}
    save(rt, candidate, activate=False)
    with rt.engine.begin() as conn:
        ch.create_channel(conn, tenant_id="default", kind="webhook", config={"url": receiver.url},
                          allowlist=rt.settings.url_allowlist, box=rt.secret_box)
    with TestClient(create_app(rt)) as client:
        op = Keys.h(keys.admin)  # the test workflows are shared: only an admin changes them
        res = client.post("/v1/workflows/WF-TEST-THUMBS/shadow", json={"version": 2, "sample_percent": 100},
                          headers=op)
        assert res.status_code == 200 and res.json()["kind"] == "shadow"
        worker = Worker(rt, pools={"*": 2}).start()
        notifier = Notifier(engine=rt.engine, settings=rt.settings).start()
        try:
            colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
            primaries = [post_job(client, keys.submitter, "WF-TEST-THUMBS", image(c), "p.png") for c in colors]
            assert all(p["workflow_version"] == 1 and p["status"] == "queued" for p in primaries)
            listed = client.get("/v1/jobs?workflow=WF-TEST-THUMBS", headers=op).json()["items"]
            assert sorted(j["id"] for j in listed) == sorted(p["id"] for p in primaries)
            shadows = client.get("/v1/jobs?shadow=true", headers=op).json()["items"]
            assert len(shadows) == 4
            assert sorted(s["shadow_of"] for s in shadows) == sorted(p["id"] for p in primaries)
            ids = [p["id"] for p in primaries] + [s["id"] for s in shadows]
            wait_until(lambda: finished(rt, ids), timeout=90, message="primaries and shadows finished")
            wait_until(lambda: {r.json()["data"].get("job_id") for r in receiver.requests}
                       >= {p["id"] for p in primaries}, timeout=30, message="a webhook per primary")
        finally:
            notifier.stop()
            worker.stop(grace=10)
        hooked_ids = {r.json()["data"].get("job_id") for r in receiver.requests}
        assert hooked_ids == {p["id"] for p in primaries}  # none for a shadow job
        for p in primaries:  # unchanged: the active version, completed, its own outputs
            job = client.get(f"/v1/jobs/{p['id']}", headers=op).json()
            assert job["status"] == "completed" and job["workflow_version"] == 1
            assert [o["name"] for o in job["outputs"]] == ["thumbnail_64.jpg"]
            assert any(e["event_type"] == "shadow" for e in job["events"])
        for s in shadows:
            job = client.get(f"/v1/jobs/{s['id']}", headers=op).json()
            assert job["status"] == "completed" and job["priority"] == 0 and job["notify"] is None
            assert all(o["storage_key"].startswith("shadow/") for o in job["outputs"])
            tell = next(x for x in job["steps"] if x["step_name"] == "Tell")
            assert tell["status"] == "skipped" and "shadow run" in tell["error_message"]

        report = client.get("/v1/workflows/WF-TEST-THUMBS/shadow/report", headers=Keys.h(keys.viewer)).json()
        assert report["pairs_total"] == 4
        primary, cand = report["versions"]["primary"], report["versions"]["candidate"]
        assert primary["versions"] == [1] and cand["versions"] == [2]
        assert primary["jobs"] == cand["jobs"] == 4 and primary["failed"] == cand["failed"] == 0
        assert primary["failures_by_class"] == {} and primary["p50_seconds"] is not None
        assert primary["steps"]["Thumb"]["outputs"] == 4 and cand["steps"]["Thumb"]["outputs"] == 4
        diff = report["pairs"][0]["outputs"][0]["difference"]
        assert diff["kind"] == "image" and diff["primary"]["width"] == 64 and diff["candidate"]["width"] == 48
        assert diff["same_dimensions"] is False and diff["ssim"] > 0.5 and diff["hash_distance"] <= 16
        # the figures of the workflow do not count shadow runs
        figures = client.get("/v1/workflows/WF-TEST-THUMBS/shadow", headers=op).json()["figures"]
        assert figures == {"1": figures["1"]} and figures["1"]["jobs"] == 4
        assert client.delete("/v1/workflows/WF-TEST-THUMBS/shadow", headers=op).json()["state"] == "stopped"
        assert "shadow_of" not in str(post_job(client, keys.submitter, "WF-TEST-THUMBS", image((1, 2, 3)), "q.png"))
        assert len(client.get("/v1/jobs?shadow=true", headers=op).json()["items"]) == 4


def test_cli_rollout_and_shadow(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mediamill.cli.main import app as cli

    save(rt, noop_doc("WF-TEST-NOOP", "Renamed"), activate=False)
    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(rt.settings.data_dir))
    monkeypatch.setenv("MEDIAMILL_DATABASE_URL", rt.settings.database_url)  # "" = the SQLite file
    run = CliRunner().invoke
    result = run(cli, ["rollout", "start", "WF-TEST-NOOP", "--version", "2", "--percent", "25",
                       "--guard-delta", "0.2"])
    assert result.exit_code == 0 and "v2 gets 25 % of new jobs" in result.output, result.output
    result = run(cli, ["rollout", "status", "WF-TEST-NOOP", "--json"])
    assert '"max_failure_delta": 0.2' in result.output and '"state": "active"' in result.output
    assert run(cli, ["rollout", "abort", "WF-TEST-NOOP"]).exit_code == 0
    result = run(cli, ["rollout", "status", "WF-TEST-NOOP"])
    assert "aborted" in result.output
    assert run(cli, ["rollout", "promote", "WF-TEST-NOOP"]).exit_code == 1  # nothing active
    result = run(cli, ["shadow", "start", "WF-TEST-NOOP", "--version", "2", "--percent", "10"])
    assert result.exit_code == 0 and "shadowing 10 %" in result.output
    result = run(cli, ["shadow", "report", "WF-TEST-NOOP"])
    assert result.exit_code == 0 and "0 shadowed jobs" in result.output
    assert run(cli, ["shadow", "promote", "WF-TEST-NOOP"]).exit_code == 0
    with rt.engine.connect() as conn:
        assert workflow_repo.get_workflow(conn, "WF-TEST-NOOP").current_version == 2


def test_shadow_jobs_are_not_aged_up_to_real_work(rt: Runtime, client: TestClient, keys: Keys) -> None:
    import time

    from mediamill.engine.housekeeping import age_waiting_jobs
    from mediamill.store.tables import media_queue

    save(rt, noop_doc("WF-TEST-NOOP", "Renamed"), activate=False)
    admin = Keys.h(keys.admin)
    assert client.post("/v1/workflows/WF-TEST-NOOP/shadow", json={"version": 2, "sample_percent": 100},
                       headers=admin).status_code == 200
    primary = post_job(client, keys.submitter, "WF-TEST-NOOP")
    time.sleep(0.05)
    assert age_waiting_jobs(rt.engine, aging_seconds=0.01, cap=10) == 1  # the primary only
    with rt.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(workflow_jobs.c.shadow_of.is_not(None), media_queue.c.priority)
                                 .select_from(media_queue.join(workflow_jobs,
                                                               workflow_jobs.c.id == media_queue.c.job_id))).all())
    assert rows == {False: 10, True: 0}, rows
    assert primary["priority"] == 5
