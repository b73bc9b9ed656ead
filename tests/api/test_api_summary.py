"""``GET /v1/analytics/summary`` on SQLite and PostgreSQL: jobs run by a real worker, failures and
cancellations counted (they finish without ``completed_at``), windows read on ``finished_at``,
tenants kept apart; ``GET /v1/jobs/{id}`` returns ``finished_at``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.engine import operations as ops
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from mediamill.store.tables import workflow_jobs as wj
from mediamill.store.timeutil import utcnow
from mediamill.workflows.loader import validate_document

from .support import PG_URL, Keys, make_runtime, postgres_database, wait_until
from .test_api_jobs import submit_file

FINAL = ("completed", "partial", "failed", "cancelled")
PARTIAL = {"code": "WF-TEST-PARTIAL", "name": "partial", "type": "generic", "queue": "test",
           "steps": [{"name": "Fine", "action": "noop"},
                     {"name": "Optional", "action": "fail", "on_failure": "continue",
                      "params": {"error_class": "invalid_input"}}]}


@pytest.fixture(params=["sqlite", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    if request.param == "sqlite":
        rt = make_runtime(tmp_path / "data")
        yield rt
        rt.close()
        return
    if not PG_URL:
        pytest.skip("MEDIAMILL_TEST_POSTGRES_URL is not set")
    with postgres_database() as url:
        rt = make_runtime(tmp_path / "data", url)
        yield rt
        rt.close()


def _summary(client: TestClient, key: str, window: str = "1h") -> dict:
    res = client.get(f"/v1/analytics/summary?window={window}", headers=Keys.h(key))
    assert res.status_code == 200, res.text
    return res.json()


def _run_all(rt: Runtime, ids: list[int]) -> None:
    worker = Worker(rt, pools={"*": 2}).start()
    try:
        wait_until(lambda: all(ops.get_job(rt.engine, i)["status"] in FINAL for i in ids), timeout=60,
                   message="every job finished")
    finally:
        worker.stop(grace=5)


def _set_run_time(rt: Runtime, job_id: int, seconds: float, *, ended_ago: float = 60) -> None:
    end = utcnow() - timedelta(seconds=ended_ago)
    with rt.engine.begin() as conn:
        conn.execute(wj.update().where(wj.c.id == job_id)
                     .values(started_at=end - timedelta(seconds=seconds), finished_at=end))


def test_summary_counts_every_outcome_and_reads_finished_at(runtime: Runtime) -> None:
    rt, keys = runtime, Keys(runtime)
    with rt.engine.begin() as conn:
        workflow_repo.save_version(conn, validate_document(PARTIAL), author="tests")
    with TestClient(create_app(rt)) as client:
        empty = _summary(client, keys.viewer)
        assert empty == {"window_seconds": 3600, "submitted": 0, "finished": 0, "completed": 0, "partial": 0,
                         "failed": 0, "cancelled": 0, "error_rate": 0.0, "p95_seconds": None}

        def submit(workflow: str, key: str = keys.submitter) -> int:
            res = submit_file(client, key, workflow=workflow)
            assert res.status_code == 202, res.text
            return int(res.json()["id"])

        ok = [submit("WF-TEST-NOOP") for _ in range(2)]
        partial = submit("WF-TEST-PARTIAL")
        failed = [submit("WF-TEST-FAIL") for _ in range(3)]
        cancelled = submit("WF-TEST-SLEEP")
        other_tenant = submit("WF-TEST-FAIL", keys.other)
        assert client.post(f"/v1/jobs/{cancelled}/cancel", headers=Keys.h(keys.submitter)).status_code == 200
        _run_all(rt, [*ok, partial, *failed, other_tenant])

        detail = client.get(f"/v1/jobs/{failed[0]}", headers=Keys.h(keys.viewer)).json()
        assert detail["status"] == "failed" and detail["finished_at"] and detail["completed_at"] is None
        done = client.get(f"/v1/jobs/{ok[0]}", headers=Keys.h(keys.viewer)).json()
        assert done["finished_at"] == done["completed_at"] is not None
        listed = client.get("/v1/jobs?status=failed,cancelled", headers=Keys.h(keys.viewer)).json()["items"]
        assert len(listed) == 4 and all(j["finished_at"] for j in listed)

        for job_id, seconds in zip((*ok, partial), (10.0, 20.0, 30.0), strict=True):
            _set_run_time(rt, job_id, seconds)  # known run times: p95 = 20 + 0.9 * (30 - 20)
        assert _summary(client, keys.viewer) == {
            "window_seconds": 3600, "submitted": 7, "finished": 7, "completed": 2, "partial": 1, "failed": 3,
            "cancelled": 1, "error_rate": pytest.approx(3 / 7), "p95_seconds": 29.0}  # rounded to the ms
        beta = _summary(client, keys.other)
        assert (beta["submitted"], beta["finished"], beta["failed"], beta["error_rate"]) == (1, 1, 1, 1.0)

        _set_run_time(rt, failed[0], 1, ended_ago=2 * 3600)  # a failure of two hours ago leaves the 1h window
        hour = _summary(client, keys.viewer)
        assert (hour["finished"], hour["failed"], hour["error_rate"]) == (6, 2, pytest.approx(2 / 6))
        six = _summary(client, keys.viewer, "6h")
        assert (six["window_seconds"], six["finished"], six["failed"]) == (6 * 3600, 7, 3)
        assert _summary(client, keys.viewer, "7d")["window_seconds"] == 7 * 86400


def test_summary_window_is_validated(client: TestClient, keys: Keys) -> None:
    for bad in ("2h", "", "24", "1d", "7d;drop"):
        res = client.get(f"/v1/analytics/summary?window={bad}", headers=Keys.h(keys.viewer))
        assert res.status_code == 422, (bad, res.text)
        assert res.headers["content-type"].startswith("application/problem+json")
    assert client.get("/v1/analytics/summary", headers=Keys.h(keys.viewer)).json()["window_seconds"] == 86400
    assert client.get("/v1/analytics/summary").status_code == 401


def test_summary_leaves_shadow_runs_out(rt: Runtime, client: TestClient, keys: Keys) -> None:
    res = submit_file(client, keys.submitter, workflow="WF-TEST-FAIL")
    job_id = res.json()["id"]
    _run_all(rt, [job_id])
    with rt.engine.begin() as conn:
        conn.execute(wj.update().where(wj.c.id == job_id).values(shadow_of=job_id))
        assert conn.execute(sa.select(wj.c.finished_at).where(wj.c.id == job_id)).scalar() is not None
    got = _summary(client, keys.viewer)
    assert (got["submitted"], got["finished"], got["failed"]) == (0, 0, 0)


def test_a_large_window_estimates_its_p95_from_a_sample_on_postgres(pg_rt: Runtime,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mediamill.store import analytics

    with pg_rt.engine.begin() as conn:  # 400 successful jobs that ran 1…400 s, finished a minute ago
        conn.exec_driver_sql(
            "INSERT INTO workflow_jobs (job_code, workflow_id, status, tenant_id, submitted_at, started_at, "
            "finished_at, completed_at) SELECT 'S' || g, (SELECT MIN(id) FROM workflow_definitions), 'completed', "
            "'default', now() AT TIME ZONE 'utc' - interval '1 hour', "
            "now() AT TIME ZONE 'utc' - interval '1 minute' - g * interval '1 second', "
            "now() AT TIME ZONE 'utc' - interval '1 minute', now() AT TIME ZONE 'utc' - interval '1 minute' "
            "FROM generate_series(1, 400) AS g")
    with pg_rt.engine.connect() as conn:
        exact = analytics.summary(conn, tenant_id="default", window_seconds=3600)
        monkeypatch.setattr(analytics, "P95_EXACT_LIMIT", 100)  # 400 successes: "large"
        sampled = analytics.summary(conn, tenant_id="default", window_seconds=3600)
        monkeypatch.setattr(analytics, "P95_SAMPLE_TARGET", 100)  # a quarter of the pages
        partial = analytics.summary(conn, tenant_id="default", window_seconds=3600)
    assert exact["p95_seconds"] == pytest.approx(380.05)
    assert sampled == exact  # the sample covers the whole table here: the same figures
    assert {k: v for k, v in partial.items() if k != "p95_seconds"} == \
        {k: v for k, v in exact.items() if k != "p95_seconds"}  # counts stay exact
    assert partial["p95_seconds"] is None or 1 <= partial["p95_seconds"] <= 400
