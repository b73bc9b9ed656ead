"""Operating over HTTP with a real worker: dead letters (list, retry, discard), job retry, queues,
workers, breakers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime

from .support import Keys, wait_until
from .test_api_jobs import submit_file


@pytest.fixture
def worker(rt: Runtime) -> Iterator[Worker]:
    w = Worker(rt, pools={"*": 2}).start()
    yield w
    w.stop(grace=5)


def _status(client: TestClient, key: str, job_id: int) -> str:
    return str(client.get(f"/v1/jobs/{job_id}", headers=Keys.h(key)).json()["status"])


def test_dead_letters_retry_and_discard(client: TestClient, keys: Keys, worker: Worker) -> None:
    jobs = [submit_file(client, keys.submitter, workflow="WF-TEST-FAIL").json()["id"] for _ in range(3)]
    for j in jobs:
        wait_until(lambda j=j: _status(client, keys.viewer, j) == "failed")
    dls = client.get("/v1/dead-letters", headers=Keys.h(keys.viewer)).json()["items"]
    assert len(dls) == 3 and {d["error_class"] for d in dls} == {"invalid_input"}
    res = client.post(f"/v1/dead-letters/{dls[0]['id']}/retry", headers=Keys.h(keys.operator))
    assert res.status_code == 200 and res.json()["job_id"] in jobs
    assert client.post(f"/v1/dead-letters/{dls[1]['id']}/discard", headers=Keys.h(keys.operator)).status_code == 200
    res = client.post("/v1/dead-letters/retry", json={"error_class": "invalid_input"}, headers=Keys.h(keys.operator))
    assert res.status_code == 200 and res.json()["count"] >= 1
    res = client.post(f"/v1/jobs/{jobs[0]}/retry", headers=Keys.h(keys.operator))
    assert res.status_code in (202, 409)


def test_queues_workers_breakers(client: TestClient, keys: Keys, worker: Worker) -> None:
    job = submit_file(client, keys.submitter, workflow="WF-TEST-NOOP").json()
    wait_until(lambda: _status(client, keys.viewer, job["id"]) == "completed")
    workers = client.get("/v1/workers", headers=Keys.h(keys.viewer)).json()["items"]
    assert any(w["id"] == worker.worker_id for w in workers)
    assert client.post("/v1/queues/test/pause", headers=Keys.h(keys.admin)).status_code == 200
    queues = {q["name"]: q for q in client.get("/v1/queues", headers=Keys.h(keys.viewer)).json()["items"]}
    assert queues["test"]["paused"] is True
    assert client.post("/v1/queues/test/resume", headers=Keys.h(keys.admin)).status_code == 200
    assert client.get("/v1/breakers", headers=Keys.h(keys.viewer)).status_code == 200
    assert client.post("/v1/breakers/noop/reset", headers=Keys.h(keys.operator)).status_code == 403
    assert client.post("/v1/breakers/noop/reset", headers=Keys.h(keys.admin)).status_code in (200, 404)
    outputs = client.get(f"/v1/jobs/{job['id']}/outputs", headers=Keys.h(keys.viewer)).json()
    assert outputs["items"] == []


def test_cancel_a_running_job(client: TestClient, keys: Keys, worker: Worker) -> None:
    job = submit_file(client, keys.submitter, workflow="WF-TEST-SLEEP").json()
    wait_until(lambda: _status(client, keys.viewer, job["id"]) == "processing")
    res = client.post(f"/v1/jobs/{job['id']}/cancel", headers=Keys.h(keys.submitter))
    assert res.status_code == 200 and res.json()["status"] in ("cancelling", "cancelled")
    wait_until(lambda: _status(client, keys.viewer, job["id"]) == "cancelled")
