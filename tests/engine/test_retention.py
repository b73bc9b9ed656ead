"""Retention never deletes an input another job, an open dead letter or an upload still uses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.engine import housekeeping
from mediamill.engine import operations as ops
from mediamill.engine.submit import JobInput, SubmitRequest, store_input_file, submit_in, submit_job
from mediamill.errors import NotFound
from mediamill.runtime import Runtime
from mediamill.store import auth_repo
from mediamill.store.inputs import lock_input
from mediamill.store.tables import upload_sessions, workflow_jobs
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import workflow
from tests.helpers import wait_until

TUS = {"Tus-Resumable": "1.0.0"}
FINAL = ("completed", "partial", "failed", "cancelled")


@pytest.fixture
def api(rt: Runtime) -> Iterator[tuple[TestClient, dict[str, str]]]:
    key = auth_repo.create_key(rt.engine, role="admin").plaintext
    with TestClient(create_app(rt)) as client:
        yield client, {"Authorization": f"Bearer {key}"}


def _upload(client: TestClient, auth: dict[str, str], data: bytes) -> str:
    res = client.post("/v1/uploads", headers={**auth, **TUS, "Upload-Length": str(len(data)),
                                               "Content-Type": "application/offset+octet-stream"}, content=data)
    assert res.status_code == 201 and res.headers["upload-offset"] == str(len(data))
    return str(res.headers["location"].rsplit("/", 1)[1])


def _submit(client: TestClient, auth: dict[str, str], workflow_code: str, **body: str) -> int:
    res = client.post("/v1/jobs", headers=auth, json={"workflow": workflow_code, **body})
    assert res.status_code == 202, res.text
    return int(res.json()["id"])


def _done(rt: Runtime, job_id: int) -> dict:
    return wait_until(lambda: (d := ops.get_job(rt.engine, job_id))["status"] in FINAL and d, timeout=30,
                      message=f"job {job_id} finished")


def _age(rt: Runtime, job_id: int, days: int = 40) -> None:
    with rt.engine.begin() as conn:
        conn.execute(workflow_jobs.update().where(workflow_jobs.c.id == job_id)
                     .values(completed_at=utcnow() - timedelta(days=days), finished_at=utcnow() - timedelta(days=days),
                             updated_at=utcnow() - timedelta(days=days)))


def _age_upload(rt: Runtime, upload_id: str, days: int = 40) -> None:
    with rt.engine.begin() as conn:
        conn.execute(upload_sessions.update().where(upload_sessions.c.id == upload_id)
                     .values(completed_at=utcnow() - timedelta(days=days)))


def test_shared_upload_survives_pruning_and_the_dead_letter_retry_runs(rt: Runtime, api, workers) -> None:
    client, auth = api
    workflow(rt, "WF-OK", [{"name": "a", "action": "noop"}])
    workflow(rt, "WF-ONCE", [{"name": "a", "action": "fail", "params": {"error_class": "unavailable", "times": 1}}])
    upload_id = _upload(client, auth, b"shared input " * 100)
    first = _submit(client, auth, "WF-OK", upload_id=upload_id)
    second = _submit(client, auth, "WF-ONCE", upload_id=upload_id)
    workers({"q": 1})
    assert _done(rt, first)["status"] == "completed"
    assert _done(rt, second)["status"] == "failed"
    key = ops.get_job(rt.engine, first)["input_key"]
    assert ops.get_job(rt.engine, second)["input_key"] == key
    _age(rt, first)
    _age_upload(rt, upload_id)  # the upload is past retention too: only the dead-lettered job holds the object
    assert housekeeping.prune_finished_jobs(rt.engine, rt.storage, days=30) == 1
    assert rt.storage.exists(key)
    dead = ops.list_dead_letters(rt.engine)[0]
    assert client.post(f"/v1/dead-letters/{dead['id']}/retry", headers=auth).status_code == 200
    assert _done(rt, second)["status"] == "completed"
    # the last user pruned: the object goes (nothing leaks)
    _age(rt, second)
    assert housekeeping.prune_finished_jobs(rt.engine, rt.storage, days=30) == 1
    assert not rt.storage.exists(key)
    assert client.post("/v1/jobs", headers=auth, json={"workflow": "WF-OK", "upload_id": upload_id}).status_code == 404


def test_a_recent_upload_keeps_its_object_for_new_jobs(rt: Runtime, api, workers) -> None:
    client, auth = api
    workflow(rt, "WF-OK", [{"name": "a", "action": "noop"}])
    upload_id = _upload(client, auth, b"reused later " * 10)
    job = _submit(client, auth, "WF-OK", upload_id=upload_id)
    workers({"q": 1})
    _done(rt, job)
    key = ops.get_job(rt.engine, job)["input_key"]
    by_key = _submit(client, auth, "WF-OK", storage_key=key)  # another job names the object by key
    _done(rt, by_key)
    _age(rt, job)
    assert housekeeping.prune_finished_jobs(rt.engine, rt.storage, days=30) == 1
    assert rt.storage.exists(key)
    _done(rt, _submit(client, auth, "WF-OK", upload_id=upload_id))  # the upload still works
    _age(rt, by_key)
    assert housekeeping.prune_finished_jobs(rt.engine, rt.storage, days=30) == 1
    assert rt.storage.exists(key)  # the upload (recent) and the third job still use it
    # terminating the upload keeps the object while a job names it
    assert client.delete(f"/v1/uploads/{upload_id}", headers={**auth, **TUS}).status_code in (204, 409)
    assert rt.storage.exists(key)


def test_a_submit_racing_the_prune_of_its_input_is_refused(rt: Runtime, api, workers) -> None:
    """The API checked the object before the prune; the insert runs after it: refused, no job without input."""
    client, auth = api
    workflow(rt, "WF-OK", [{"name": "a", "action": "noop"}])
    upload_id = _upload(client, auth, b"going away")
    job = _submit(client, auth, "WF-OK", upload_id=upload_id)
    workers({"q": 1})
    _done(rt, job)
    key = ops.get_job(rt.engine, job)["input_key"]
    checked = JobInput(storage_key=key, mime="text/plain", size=10, reused=True)  # what the API saw a moment ago
    _age(rt, job)
    _age_upload(rt, upload_id)
    assert housekeeping.prune_finished_jobs(rt.engine, rt.storage, days=30) == 1
    assert not rt.storage.exists(key)
    with pytest.raises(NotFound):
        submit_job(rt.engine, SubmitRequest(job_input=checked, workflow_code="WF-OK"))
    assert ops.list_jobs(rt.engine) == []


def test_submits_of_one_input_run_side_by_side_and_a_prune_waits_for_them(pg_rt: Runtime, input_file) -> None:
    """Submits only add references: they share the input's lock (a spike of jobs on one upload is not
    serialized on it), while whoever may delete the object still waits for every open submit."""
    workflow(pg_rt, "WF-OK", [{"name": "a", "action": "noop"}])
    first = store_input_file(pg_rt.storage, input_file)
    submit_job(pg_rt.engine, SubmitRequest(job_input=first, workflow_code="WF-OK"))
    again = JobInput(storage_key=first.storage_key, mime=first.mime, size=first.size, reused=True)
    with pg_rt.engine.connect() as holder:
        holder_tx = holder.begin()
        submit_in(holder, SubmitRequest(job_input=again, workflow_code="WF-OK"))  # still open: holds its lock
        with pg_rt.engine.begin() as conn:  # a second submit of the same input does not wait for the first
            conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            submit_in(conn, SubmitRequest(job_input=again, workflow_code="WF-OK"))
        with pg_rt.engine.connect() as pruner, pytest.raises(sa.exc.OperationalError, match="lock timeout"), \
                pruner.begin():
            pruner.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
            lock_input(pruner, str(first.storage_key))
        holder_tx.commit()
    with pg_rt.engine.begin() as pruner:  # once the submits are done, the prune takes the lock at once
        pruner.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
        lock_input(pruner, str(first.storage_key))
    assert len(ops.list_jobs(pg_rt.engine)) == 3
