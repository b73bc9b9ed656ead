"""A rescue pass commits job by job. A SIGKILL storm leaves a backlog of orphans; rescued in one transaction, the
pass takes seconds on a busy machine, a rescuer killed before its end rolls all of it back, and the next one
faces a larger backlog still — the jobs stayed orphaned for as long as the storm lasted."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mediamill.engine import housekeeping
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store.tables import media_queue, workflow_jobs
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import workflow
from tests.helpers import wait_until

ORPHANS = 5
BLOCKED = 3  # the rescuer dies while it waits on this one (0-based, in lease order)


def _orphans(rt: Runtime, input_file: Path) -> list[int]:
    """ORPHANS jobs claimed by a worker that died; their leases lapsed one after the other."""
    workflow(rt, "WF-ORPHAN", [{"name": "a", "action": "noop"}])
    inp = store_input_file(rt.storage, input_file)
    jobs = [submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-ORPHAN")).id for _ in range(ORPHANS)]
    with rt.engine.begin() as conn:
        assert len(tx.claim(conn, worker_id="dead-worker", queue="q", limit=ORPHANS, lease_seconds=30)) == ORPHANS
        for i, job in enumerate(jobs):
            conn.execute(media_queue.update().where(media_queue.c.job_id == job)
                         .values(lease_expires_at=utcnow() - timedelta(seconds=60 - i)))
    return jobs


def _statuses(rt: Runtime, jobs: list[int]) -> list[str]:
    with rt.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(media_queue.c.job_id, media_queue.c.status)
                                 .where(media_queue.c.job_id.in_(jobs))).all())
    return [rows[j] for j in jobs]


@pytest.mark.postgres
def test_a_rescuer_killed_mid_pass_keeps_the_jobs_it_rescued(pg_rt: Runtime, input_file: Path) -> None:
    rt = pg_rt
    jobs = _orphans(rt, input_file)
    with rt.engine.connect() as blocker, rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        blocker_pid = blocker.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        blocker.commit()
        trans = blocker.begin()  # someone holds the fourth job's row: the rescuer will wait there
        blocker.execute(sa.select(workflow_jobs.c.id).where(workflow_jobs.c.id == jobs[BLOCKED]).with_for_update())
        outcome: list[BaseException] = []

        def rescue() -> None:
            try:
                housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=5)
            except sa.exc.DBAPIError as exc:
                outcome.append(exc)

        rescuer = threading.Thread(target=rescue)
        rescuer.start()
        waiting = wait_until(lambda: admin.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> :me"),
            {"me": blocker_pid}).scalar(), timeout=30, message="the rescuer waits on the held row")
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting})  # the rescuer dies
        rescuer.join(timeout=30)
        trans.rollback()
    assert outcome, "the rescuer's connection was cut mid-pass"
    assert _statuses(rt, jobs) == ["queued"] * BLOCKED + ["processing"] * (ORPHANS - BLOCKED)

    assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=5) == ORPHANS - BLOCKED  # the next pass goes on
    assert _statuses(rt, jobs) == ["queued"] * ORPHANS
    with rt.engine.connect() as conn:
        counts = conn.execute(sa.select(workflow_jobs.c.rescue_count).where(workflow_jobs.c.id.in_(jobs))).scalars()
        assert set(counts) == {1}  # each rescued once


def test_a_rescue_pass_stops_taking_jobs_when_its_time_is_up(rt: Runtime, input_file: Path) -> None:
    """The lifeline heartbeats between passes: a pass over a large backlog must not hold it past the lease."""
    jobs = _orphans(rt, input_file)
    assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=5, budget_seconds=0) == 0
    assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=5, limit=2) == 2
    assert _statuses(rt, jobs) == ["queued"] * 2 + ["processing"] * (ORPHANS - 2)
    assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=5) == ORPHANS - 2
