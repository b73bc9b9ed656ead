"""The reference INSERTs (tests/fixtures/seed_001_inserts.sql) run unmodified on a migrated database, and the
reference reports (seed_001_queries.sql, numbered 12–15 there) return the figures those rows imply — on SQLite
and on PostgreSQL (step 15 uses EXTRACT(EPOCH …): PostgreSQL only)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from mediamill.store.db import create_db_engine, upgrade
from tests.helpers import BACKENDS, database_url

FIXTURES = Path(__file__).parent.parent / "fixtures"


def _queries() -> dict[int, str]:
    text = (FIXTURES / "seed_001_queries.sql").read_text()
    parts = re.split(r"^-- Step (\d+):.*$", text, flags=re.M)
    out = {}
    for num, body in zip(parts[1::2], parts[2::2], strict=True):
        sql = "\n".join(line for line in body.splitlines() if not line.startswith("--")).strip().rstrip(";")
        out[int(num)] = sql
    return out


@contextlib.contextmanager
def _seeded(backend: str, tmp_path: Path) -> Iterator[sa.engine.Engine]:
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        engine = create_db_engine(url)
        inserts = (FIXTURES / "seed_001_inserts.sql").read_text()
        with engine.begin() as conn:
            for stmt in inserts.split(";\n"):
                body = "\n".join(line for line in stmt.splitlines() if not line.startswith("--")).strip()
                if body:
                    conn.exec_driver_sql(body.rstrip(";"))
        yield engine
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.engine.Engine]:
    with _seeded(request.param, tmp_path) as engine:
        yield engine


@pytest.fixture
def pg_seeded(tmp_path: Path) -> Iterator[sa.engine.Engine]:
    with _seeded("postgres", tmp_path) as engine:
        yield engine


def _report(engine: sa.engine.Engine, step: int) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(_queries()[step]).mappings().all())


def test_job_status_dashboard(seeded: sa.engine.Engine) -> None:
    rows = _report(seeded, 12)
    assert [r["job_code"] for r in rows] == ["JOB-2024-005", "JOB-2024-002", "JOB-2024-006", "JOB-2024-004",
                                             "JOB-2024-001", "JOB-2024-003"]
    first = rows[0]
    assert first["status"] == "failed" and first["total_steps"] == 5 and first["workflow_name"] == \
        "Image Processing Pipeline"
    by_code = {r["job_code"]: r for r in rows}
    assert by_code["JOB-2024-001"]["total_steps"] == 7  # WF-VIDEO-TRANSCODE has 7 steps
    assert by_code["JOB-2024-006"]["total_steps"] == 0  # the reference rows give WF-VIDEO-ANALYZE no steps
    assert Decimal(str(by_code["JOB-2024-002"]["progress_percent"])) == Decimal("57")


def test_queue_monitor(seeded: sa.engine.Engine) -> None:
    rows = _report(seeded, 13)
    by_queue = {r["queue_name"]: r for r in rows}
    assert set(by_queue) == {"video_processing", "video_analysis"}
    assert by_queue["video_processing"]["waiting"] == 1 and by_queue["video_processing"]["processing"] == 0
    assert float(by_queue["video_processing"]["avg_priority"]) == 8.0
    assert float(by_queue["video_analysis"]["avg_priority"]) == 6.0


def test_step_performance(seeded: sa.engine.Engine) -> None:
    rows = _report(seeded, 14)
    by_step = {}
    for r in rows:
        by_step.setdefault(r["step_name"], r)
    t1080 = by_step["Transcode 1080p"]
    assert float(t1080["avg_duration_sec"]) == 1500.0
    assert (t1080["executions"], t1080["min_duration_sec"], t1080["max_duration_sec"]) == (2, 1200, 1800)
    assert all(r["failures"] == 0 for r in rows)
    assert len(rows) == 12


def test_workflow_analytics_postgres(pg_seeded: sa.engine.Engine) -> None:
    rows = _report(pg_seeded, 15)
    by_name = {r["workflow_name"]: r for r in rows}
    video = by_name["Video Transcoding Pipeline"]
    assert (video["total_jobs"], video["completed"], video["failed"], video["in_progress"]) == (3, 1, 0, 2)
    assert float(video["avg_duration_minutes"]) == pytest.approx(44.0)
    image = by_name["Image Processing Pipeline"]
    assert (image["total_jobs"], image["completed"], image["failed"]) == (2, 1, 1)
    assert float(image["avg_duration_minutes"]) == pytest.approx(1.5)
    assert by_name["Audio Transcoding Pipeline"]["total_jobs"] == 0
    assert rows[0]["workflow_name"] == "Video Transcoding Pipeline"
