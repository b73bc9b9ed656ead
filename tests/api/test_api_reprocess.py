"""Reprocess the missing parts of finished jobs: one job, in bulk, and from the CLI."""

from __future__ import annotations

import collections
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from mediamill.cli.main import app as cli
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from tests.helpers import apply_workflow

from .backends import BACKENDS, runtime_on
from .support import Keys, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=BACKENDS)
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """The API tests' runtime, once on SQLite and once on PostgreSQL."""
    yield from runtime_on(request.param, tmp_path / "data")
FINAL = ("completed", "partial", "failed", "cancelled")
REPAIR = {
    "code": "WF-TEST-REPAIR", "name": "thumbnail with a flaky step", "type": "image", "queue": "test",
    "input_types": ["image/png"],
    "steps": [
        {"name": "Thumb", "action": "create_thumbnail", "params": {"size": 32}},
        {"name": "Flaky", "action": "fail", "params": {"error_class": "transient", "times": 1},
         "on_failure": "continue"},
        {"name": "Rush only", "action": "noop", "when": "job.priority > 50"},
        {"name": "Done", "action": "noop"},
    ],
}


@pytest.fixture
def worker(rt: Runtime) -> Iterator[Worker]:
    apply_workflow(rt, REPAIR)
    w = Worker(rt, pools={"*": 2}).start()
    yield w
    w.stop(grace=10)


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (10, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


def submit(client: TestClient, key: str) -> int:
    res = client.post("/v1/jobs", files={"file": ("x.png", png())}, data={"workflow": "WF-TEST-REPAIR"},
                      headers=Keys.h(key))
    assert res.status_code == 202, res.text
    return int(res.json()["id"])


def finished(client: TestClient, key: str, job_id: int, run: int = 1) -> dict[str, Any]:
    def done() -> bool:
        j = client.get(f"/v1/jobs/{job_id}", headers=Keys.h(key)).json()
        return j["status"] in FINAL and (j["run_number"] or 1) >= run

    wait_until(done, timeout=60, message=f"job {job_id} run {run} finished")
    return dict(client.get(f"/v1/jobs/{job_id}", headers=Keys.h(key)).json())


def runs(job: dict[str, Any]) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for s in job["steps"]:
        out[s["step_name"]].append((s["run_number"], s["status"]))
    return dict(out)


def test_reprocess_failed_steps_of_a_partial_job(client: TestClient, keys: Keys, worker: Worker) -> None:
    job_id = submit(client, keys.submitter)
    first = finished(client, keys.viewer, job_id)
    assert first["status"] == "partial"
    thumb = next(o for o in first["outputs"] if o["step_name"] == "Thumb")

    op = Keys.h(keys.operator)
    assert client.post(f"/v1/jobs/{job_id}/reprocess", json={"steps": "sideways"}, headers=op).status_code == 422
    assert client.post(f"/v1/jobs/{job_id}/reprocess", json={}, headers=Keys.h(keys.submitter)).status_code == 403
    assert client.post(f"/v1/jobs/{job_id}/reprocess", json={}, headers=Keys.h(keys.other)).status_code == 404
    res = client.post(f"/v1/jobs/{job_id}/reprocess", json={"steps": "failed"}, headers=op)
    assert res.status_code == 202, res.text
    assert res.json()["steps"] == ["Flaky"] and res.json()["run_number"] == 2
    again = client.post(f"/v1/jobs/{job_id}/reprocess", json={"steps": "failed"}, headers=op)
    assert again.status_code == 409  # queued, not finished

    second = finished(client, keys.viewer, job_id, run=2)
    assert second["status"] == "completed", second.get("error_message")
    assert runs(second) == {"Thumb": [(1, "completed")], "Flaky": [(1, "failed"), (2, "completed")],
                            "Rush only": [(1, "skipped")], "Done": [(1, "completed")]}
    kept = next(o for o in second["outputs"] if o["step_name"] == "Thumb")
    assert kept["storage_key"] == thumb["storage_key"]  # the completed step's output was kept, not remade
    assert any(e["event_type"] == "reprocess" and e["data"]["steps"] == ["Flaky"] for e in second["events"])
    assert client.post(f"/v1/jobs/{job_id}/reprocess", json={"steps": "failed"}, headers=op).status_code == 409

    # skipped steps are evaluated again; "all" runs everything again, each time as new executions
    assert client.post(f"/v1/jobs/{job_id}/reprocess", json={"steps": "skipped"}, headers=op).json()["steps"] == \
        ["Rush only"]
    third = finished(client, keys.viewer, job_id, run=3)
    assert third["status"] == "completed" and runs(third)["Rush only"] == [(1, "skipped"), (3, "skipped")]
    client.post(f"/v1/jobs/{job_id}/reprocess", json={"steps": "all"}, headers=op)
    fourth = finished(client, keys.viewer, job_id, run=4)
    assert fourth["status"] == "completed"
    assert {name: [r for r, _s in rows] for name, rows in runs(fourth).items()} == {
        "Thumb": [1, 4], "Flaky": [1, 2, 4], "Rush only": [1, 3, 4], "Done": [1, 4]}
    assert next(o for o in fourth["outputs"] if o["step_name"] == "Thumb")["storage_key"] != thumb["storage_key"]


def test_bulk_reprocess_and_cli(rt: Runtime, client: TestClient, keys: Keys, worker: Worker,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [submit(client, keys.submitter) for _ in range(3)]
    for job_id in ids:
        assert finished(client, keys.viewer, job_id)["status"] == "partial"
    op = Keys.h(keys.operator)
    body = {"workflow": "WF-TEST-REPAIR", "status": ["partial"], "step": "Flaky", "steps": "failed"}
    dry = client.post("/v1/jobs/reprocess", json={**body, "dry_run": True}, headers=op).json()
    assert dry["count"] == 3 and sorted(dry["job_ids"]) == sorted(ids)
    assert client.post("/v1/jobs/reprocess", json={**body, "step": "Done"}, headers=op).json()["count"] == 0
    assert client.post("/v1/jobs/reprocess", json=body, headers=Keys.h(keys.other)).json()["count"] == 0
    assert client.post("/v1/jobs/reprocess", json={**body, "status": ["queued"]}, headers=op).status_code == 422

    done = client.post("/v1/jobs/reprocess", json={**body, "since": "2000-01-01T00:00:00Z"}, headers=op).json()
    assert done["count"] == 3
    for job_id in ids[:2]:
        assert finished(client, keys.viewer, job_id, run=2)["status"] == "completed"

    # the CLI: one job, then --all with filters (the third one is already done)
    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(rt.settings.data_dir))
    monkeypatch.setenv("MEDIAMILL_DATABASE_URL", rt.settings.database_url)  # "" = the SQLite file
    finished(client, keys.viewer, ids[2], run=2)
    result = CliRunner().invoke(cli, ["reprocess", str(ids[2]), "--steps", "skipped"])
    assert result.exit_code == 0, result.output
    assert f"job {ids[2]}: queued as run 3 re-running Rush only" in result.output
    finished(client, keys.viewer, ids[2], run=3)
    result = CliRunner().invoke(cli, ["reprocess", "--all", "--workflow", "WF-TEST-REPAIR", "--status", "completed",
                                      "--steps", "skipped", "--dry-run"])
    assert result.exit_code == 0 and "3 jobs would be reprocessed" in result.output
    result = CliRunner().invoke(cli, ["reprocess"])
    assert result.exit_code == 1 and "--all" in result.output


def test_reprocess_on_a_new_version_reruns_failed_and_changed_steps(rt: Runtime, client: TestClient, keys: Keys,
                                                                      worker: Worker) -> None:
    job_id = submit(client, keys.submitter)
    assert finished(client, keys.viewer, job_id)["status"] == "partial"
    fixed = {**REPAIR, "steps": [REPAIR["steps"][0], {"name": "Flaky", "action": "noop"},
                                 REPAIR["steps"][2], {"name": "Done", "action": "noop", "params": {}},
                                 {"name": "Extra", "action": "noop"}]}
    version = apply_workflow(rt, fixed).version
    res = client.post(f"/v1/jobs/{job_id}/reprocess", json={"steps": "failed", "version": version},
                      headers=Keys.h(keys.operator))
    assert res.status_code == 202, res.text
    assert res.json()["steps"] == ["Flaky", "Extra"]  # failed (and changed) + new; Thumb and Done are the same
    done = finished(client, keys.viewer, job_id, run=2)
    assert done["status"] == "completed" and done["workflow_version"] == version
    assert runs(done)["Thumb"] == [(1, "completed")] and runs(done)["Extra"] == [(2, "completed")]
    assert client.post(f"/v1/jobs/{job_id}/reprocess", json={"version": 99},
                       headers=Keys.h(keys.operator)).status_code == 404
