"""Migration 0002_ops_numbers: jobs that finished before it get ``finished_at`` (from ``completed_at``,
else their last update); jobs still running do not; downgrading drops it again."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from mediamill.store.db import alembic_config, create_db_engine, upgrade
from tests.helpers import BACKENDS, database_url

DONE, FAILED_AT, STARTED = datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 4, 0, 0), datetime(2026, 1, 2, 3)
JOBS = {  # code: (status, completed_at, updated_at)
    "J-DONE": ("completed", DONE, FAILED_AT),
    "J-FAILED": ("failed", None, FAILED_AT),
    "J-CANCELLED": ("cancelled", None, None),
    "J-RUNNING": ("processing", None, FAILED_AT),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_finished_jobs_are_backfilled(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        upgrade(url, "0001")
        engine = create_db_engine(url)
        with engine.begin() as conn:
            wf = conn.execute(sa.text("INSERT INTO workflow_definitions (workflow_code) VALUES ('WF-OLD') "
                                      "RETURNING id")).scalar_one()
            for code, (status, completed, updated) in JOBS.items():
                conn.execute(sa.text("INSERT INTO workflow_jobs (job_code, workflow_id, status, started_at, "
                                     "completed_at, updated_at, submitted_at) VALUES (:c, :w, :s, :st, :d, :u, :st)"),
                             {"c": code, "w": wf, "s": status, "st": STARTED, "d": completed, "u": updated})
        upgrade(url)
        with engine.connect() as conn:
            got = dict(conn.execute(sa.text("SELECT job_code, finished_at FROM workflow_jobs")).all())
        assert {k: _dt(v) for k, v in got.items()} == {"J-DONE": DONE, "J-FAILED": FAILED_AT,
                                                       "J-CANCELLED": STARTED, "J-RUNNING": None}
        command.downgrade(alembic_config(url), "0001")
        assert "finished_at" not in {c["name"] for c in sa.inspect(engine).get_columns("workflow_jobs")}
        engine.dispose()


def _dt(value: object) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
