"""A finish batch looks its jobs up by id, whatever the statistics say about waiting jobs.

With most jobs finished when the table was last analysed, the planner thinks few jobs wait; the finish's guard
``status IN ('processing', 'queued')`` then looked cheaper to scan than the batch's ids, and every finish read
the whole backlog's entries in the (status, priority) index (19,800 entries for 200 jobs with 20,000 waiting
beside 1,000,000 finished ones: the drain ran 1.25× slower on a table with history)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from mediamill.engine.submit import SubmitRequest, store_input_file, submit_many
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from tests.engine.conftest import workflow


def test_a_finish_batch_reads_its_jobs_by_id_not_the_backlog(pg_rt: Runtime, input_file: Path) -> None:
    workflow(pg_rt, "WF-PLAN", [{"name": "a", "action": "noop"}])
    stored = store_input_file(pg_rt.storage, input_file)
    for _ in range(4):
        submit_many(pg_rt.engine, [SubmitRequest(job_input=stored, workflow_code="WF-PLAN")] * 500)
    with pg_rt.engine.begin() as conn:  # history: every job so far finished, and the statistics know it
        conn.execute(sa.text("UPDATE workflow_jobs SET status = 'completed', finished_at = now(), "
                             "completed_at = now()"))
        conn.execute(sa.text("DELETE FROM media_queue"))
    with pg_rt.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE workflow_jobs"))
    for _ in range(2):  # then a backlog the statistics have not seen
        submit_many(pg_rt.engine, [SubmitRequest(job_input=stored, workflow_code="WF-PLAN")] * 500)

    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if statement.startswith("UPDATE workflow_jobs SET") and "finished_at" in statement:
            seen.append((statement, parameters))

    with pg_rt.engine.begin() as conn:
        claimed = tx.claim(conn, worker_id="w", queue=None, limit=100, lease_seconds=30)
        assert len(claimed) == 100
        finishes = [tx.Finish(job=c.job, status="completed", workflow_code="WF-PLAN", workflow_type="generic",
                              workflow_version=1, total_steps=1) for c in claimed]
        event.listen(pg_rt.engine, "before_cursor_execute", capture)
        try:
            assert len(tx.finish_jobs(conn, "w", finishes)) == 100
        finally:
            event.remove(pg_rt.engine, "before_cursor_execute", capture)
        (statement, parameters), = seen
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert "ix_workflow_jobs_status_priority" not in plan and "Index Scan using pk_workflow_jobs" in plan, plan
