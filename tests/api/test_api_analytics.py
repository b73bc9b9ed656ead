"""Analytics on the reference rows (tests/fixtures/seed_001_inserts.sql), on SQLite and PostgreSQL: the four
reports agree with the reference queries (tests/fixtures/seed_001_queries.sql), which run unmodified on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.config import Settings
from mediamill.runtime import Runtime
from mediamill.store import analytics, auth_repo
from tests.helpers import database_url

from .support import Keys

FIXTURES = Path(__file__).parent.parent / "fixtures"
SINCE = datetime(2024, 1, 1)


def _statements(path: Path) -> list[str]:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def _seeded(data_dir: Path, url: str = "") -> Runtime:
    rt = Runtime(Settings(data_dir=data_dir, database_url=url))
    rt.migrate()  # no built-ins: the reference rows bring their own workflow ids
    with rt.engine.begin() as conn:
        for stmt in _statements(FIXTURES / "seed_001_inserts.sql"):
            conn.exec_driver_sql(stmt)
    auth_repo.clear_cache()
    return rt


@pytest.fixture(params=["sqlite", "postgres"])
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    with database_url(request.param, tmp_path) as url:
        rt = _seeded(tmp_path / "data", url if request.param == "postgres" else "")
        yield rt
        rt.close()


@pytest.fixture
def pg_seeded(tmp_path: Path) -> Iterator[Runtime]:
    with database_url("postgres", tmp_path) as url:
        rt = _seeded(tmp_path / "data", url)
        yield rt
        rt.close()


def test_job_status_report(seeded: Runtime) -> None:
    with seeded.engine.connect() as conn:
        report = analytics.job_status(conn, tenant_id="default", since=SINCE)
    codes = [j["job_code"] for j in report["jobs"]]
    assert codes == ["JOB-2024-005", "JOB-2024-002", "JOB-2024-006", "JOB-2024-004", "JOB-2024-001", "JOB-2024-003"]
    steps = {j["job_code"]: j["total_steps"] for j in report["jobs"]}
    assert steps["JOB-2024-001"] == 7 and steps["JOB-2024-003"] == 5
    assert report["counts"] == {"completed": 2, "processing": 1, "pending": 1, "failed": 1, "queued": 1}


def test_queue_step_and_workflow_reports(seeded: Runtime) -> None:
    with seeded.engine.connect() as conn:
        queues = {q["queue_name"]: q for q in analytics.queues(conn, tenant_id="default")}
        steps = analytics.steps(conn, tenant_id="default", since=SINCE)
        flows = {w["workflow_code"]: w for w in analytics.workflows(conn, tenant_id="default", since=SINCE)}
    assert queues["video_processing"]["waiting"] == 1 and queues["video_processing"]["avg_priority"] == 8
    assert queues["video_analysis"]["jobs_in_queue"] == 1
    top = steps[0]
    assert (top["step_name"], top["executions"], top["avg_duration_sec"], top["max_duration_sec"]) == \
        ("Transcode 1080p", 2, 1500, 1800)
    video = flows["WF-VIDEO-TRANSCODE"]
    assert (video["total_jobs"], video["completed"], video["in_progress"]) == (3, 1, 2)
    assert video["avg_duration_minutes"] == pytest.approx(44.0)
    image = flows["WF-IMAGE-PROCESS"]
    assert (image["completed"], image["failed"], image["avg_duration_minutes"]) == (1, 1, pytest.approx(1.5))


def test_seed_queries_run_unmodified_on_postgres(pg_seeded: Runtime) -> None:
    seeded = pg_seeded
    reports = _statements(FIXTURES / "seed_001_queries.sql")
    with seeded.engine.connect() as conn:
        results = [conn.exec_driver_sql(q).mappings().all() for q in reports]
        ours = {w["workflow_code"]: w for w in analytics.workflows(conn, tenant_id="default", since=SINCE)}
    assert [r["job_code"] for r in results[0]][:4] == ["JOB-2024-005", "JOB-2024-002", "JOB-2024-006", "JOB-2024-004"]
    assert {r["queue_name"] for r in results[1]} == {"video_processing", "video_analysis"}
    seed15 = {r["workflow_name"]: r for r in results[3]}
    video = seed15["Video Transcoding Pipeline"]
    assert float(video["avg_duration_minutes"]) == pytest.approx(ours["WF-VIDEO-TRANSCODE"]["avg_duration_minutes"])
    assert video["total_jobs"] == ours["WF-VIDEO-TRANSCODE"]["total_jobs"]


def test_durations_errors_throughput_over_http(seeded: Runtime) -> None:
    with seeded.engine.begin() as conn:  # finished as the engine leaves them: finished_at on every final state
        conn.execute(sa.text("UPDATE workflow_jobs SET finished_at = completed_at WHERE status = 'completed'"))
        conn.execute(sa.text("UPDATE workflow_jobs SET finished_at = '2024-01-25 12:31:00', "
                             "error_class = 'invalid_input'"
                             " WHERE id = 5"))
    key = auth_repo.create_key(seeded.engine, role="viewer").plaintext
    with TestClient(create_app(seeded)) as client:
        h = Keys.h(key)
        q = "?since=2024-01-01T00:00:00Z"
        durations = client.get(f"/v1/analytics/durations{q}", headers=h).json()
        video = next(r for r in durations["jobs_seconds"] if r["name"] == "WF-VIDEO-TRANSCODE")
        assert video["p50"] == pytest.approx(44 * 60)
        errors = client.get(f"/v1/analytics/errors{q}", headers=h).json()
        assert errors["finished"] == 3 and errors["by_class"][0]["error_class"] == "invalid_input"
        assert errors["error_rate"] == pytest.approx(1 / 3)
        tp = client.get(f"/v1/analytics/throughput{q}&bucket=1h", headers=h).json()
        assert sum(b["submitted"] for b in tp["buckets"]) == 6
        assert sum(b["finished_total"] for b in tp["buckets"]) == 3
        for name in ("job-status", "queues", "steps", "workflows"):
            assert client.get(f"/v1/analytics/{name}{q}", headers=h).status_code == 200


def test_reports_read_windows_through_indexes(tmp_path: Path) -> None:
    """No report walks the whole jobs or step-executions table (SQLite query plans)."""
    from mediamill.store import workflow_repo
    from mediamill.workflows.loader import validate_document

    from .support import TEST_WORKFLOWS

    rt = Runtime(Settings(data_dir=tmp_path / "data"))
    rt.migrate()
    with rt.engine.begin() as conn:
        workflow_repo.save_version(conn, validate_document(TEST_WORKFLOWS[0]), author="tests")
        conn.exec_driver_sql(
            "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < 20000) "
            "INSERT INTO workflow_jobs (job_code, workflow_id, workflow_version, status, priority, tenant_id, "
            "submitted_at, started_at, completed_at, finished_at) SELECT 'J' || x, 1, 1, 'completed', x % 10, "
            "'default', datetime('now', '-' || (x * 60) || ' seconds'), "
            "datetime('now', '-' || (x * 60) || ' seconds'), "
            "datetime('now', '-' || (x * 60 - 2) || ' seconds'), datetime('now', '-' || (x * 60 - 2) || ' seconds') "
            "FROM g")
        conn.exec_driver_sql("INSERT INTO step_executions (job_id, step_id, status, action, completed_at, "
                             "duration_seconds) SELECT id, 1, 'completed', 'noop', completed_at, 2 FROM workflow_jobs")
        conn.exec_driver_sql("ANALYZE")
    plans: list[tuple[str, object]] = []

    @sa.event.listens_for(rt.engine, "before_cursor_execute")
    def _capture(conn: object, cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "DISTINCT action" not in statement:
            plans.append((statement, parameters))

    with rt.engine.connect() as conn:
        for fn in (analytics.steps, analytics.durations, analytics.error_rates, analytics.workflows):
            fn(conn, tenant_id="default")
        analytics.throughput(conn, tenant_id="default", bucket="1h")
        analytics.status_counts(conn, tenant_id="default", since=analytics.window_start(None))
        analytics.summary(conn, tenant_id="default", window_seconds=7 * 86400)
        sa.event.remove(rt.engine, "before_cursor_execute", _capture)
        assert len(plans) >= 11
        for statement, parameters in plans:
            plan = " | ".join(r[3] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                  parameters).all())  # type: ignore[arg-type]
            assert "SCAN workflow_jobs" not in plan and "SCAN se" not in plan.replace("SCAN se LEFT", ""), plan
            assert "SCAN s " not in plan + " ", plan
    rt.close()

