"""Stale writers: a worker whose claim was rescued and completed elsewhere writes nothing more about the job
(no progress, no events after the final one), logs the loss once and drops the job."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa

from mediamill.engine import housekeeping
from mediamill.engine import transitions as tx
from mediamill.runtime import Runtime
from mediamill.store.tables import job_events, media_queue, step_executions, workflow_jobs
from tests.engine.conftest import workflow
from tests.helpers import wait_until


def _progress(rt: Runtime, job_id: int) -> float | None:
    with rt.engine.connect() as conn:
        return conn.execute(sa.select(workflow_jobs.c.progress_percent).where(workflow_jobs.c.id == job_id)
                            ).scalar_one()


def test_a_worker_that_lost_its_claim_writes_nothing_more(rt: Runtime, submit, workers,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    workflow(rt, "WF-STALE", [{"name": "long", "action": "sleep", "params": {"seconds": 6}}])
    job = submit("WF-STALE")
    a = workers({"*": 2})
    wait_until(lambda: (_progress(rt, job.id) or 0) > 0, timeout=30)  # A's step runs and reports progress
    with rt.engine.begin() as conn:  # A is cut off: its job is rescued, claimed by B and completed there
        assert housekeeping._rescue_one(conn, job.id, a.worker_id, 5, None) == 1
        b = tx.claim(conn, worker_id="worker-B", queue=None, limit=1, lease_seconds=30)
        assert [c.job["id"] for c in b] == [job.id]
        done = tx.Finish(job=b[0].job, status="completed", workflow_code="WF-STALE", workflow_type="generic",
                         workflow_version=1, total_steps=1)
        assert tx.finish_jobs(conn, "worker-B", [done]) == [job.id]
    with rt.engine.connect() as conn:
        final_event = conn.execute(sa.select(sa.func.max(job_events.c.id))
                                   .where(job_events.c.job_id == job.id)).scalar_one()
    assert _progress(rt, job.id) == 100
    wait_until(lambda: job.id not in a.running, timeout=15)  # A drops the job instead of running it out
    time.sleep(1.5)  # what A might still write would land by now
    assert _progress(rt, job.id) == 100
    with rt.engine.connect() as conn:
        late = conn.execute(sa.select(job_events.c.event_type, job_events.c.data)
                            .where(job_events.c.job_id == job.id, job_events.c.id > final_event)).all()
        status = conn.execute(sa.select(workflow_jobs.c.status).where(workflow_jobs.c.id == job.id)).scalar_one()
        a_steps = conn.execute(sa.select(step_executions.c.status)
                               .where(step_executions.c.job_id == job.id,
                                      step_executions.c.worker_id == a.worker_id)).scalars().all()
        queued = conn.execute(sa.select(sa.func.count()).select_from(media_queue)
                              .where(media_queue.c.job_id == job.id)).scalar_one()
    assert late == [] and status == "completed" and queued == 0
    assert a_steps == ["interrupted"]  # the rescue closed A's execution; A did not complete or cancel it
    lost = [r for r in caplog.records if "lost its claim" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]
