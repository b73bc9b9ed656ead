"""A rescued or handed-back job keeps its place in the queue: its priority (aged or not) and its age."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from mediamill.engine import housekeeping
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store.tables import media_queue
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import workflow
from tests.helpers import wait_until

BACKLOG = 40


def _next(rt: Runtime) -> int:
    with rt.engine.begin() as conn:
        got = tx.claim(conn, worker_id="worker-B", queue=None, limit=1, lease_seconds=30)
    return got[0].job["id"]


def test_a_rescued_job_keeps_its_aged_priority_and_its_age(rt: Runtime, submit) -> None:
    workflow(rt, "WF-PLACE", [{"name": "a", "action": "noop"}])
    first = submit("WF-PLACE", priority=5)
    with rt.engine.begin() as conn:  # it waited long enough to age from 5 to 7
        conn.execute(media_queue.update().where(media_queue.c.job_id == first.id)
                     .values(priority=7, aged_at=utcnow(), scheduled_time=utcnow() - timedelta(minutes=2)))
    backlog = [submit("WF-PLACE", priority=6).id for _ in range(BACKLOG)]
    with rt.engine.begin() as conn:
        got = tx.claim(conn, worker_id="worker-A", queue=None, limit=1, lease_seconds=30)
    assert got[0].job["id"] == first.id
    with rt.engine.begin() as conn:  # A is lost
        conn.execute(media_queue.update().where(media_queue.c.job_id == first.id)
                     .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=5) == 1
    with rt.engine.connect() as conn:
        row = conn.execute(sa.select(media_queue.c.priority, media_queue.c.base_priority, media_queue.c.status)
                           .where(media_queue.c.job_id == first.id)).one()
    assert tuple(row) == (7, 5, "queued")
    assert _next(rt) == first.id  # ahead of the 40 jobs of priority 6 that arrived after it
    assert _next(rt) == backlog[0]


def test_a_handed_back_job_runs_before_the_jobs_that_arrived_after_it(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-PLACE", [{"name": "long", "action": "sleep", "params": {"seconds": 30}}])
    first = submit("WF-PLACE")
    w = workers({"*": 1})
    wait_until(lambda: first.id in w.running, timeout=30)
    backlog = [submit("WF-PLACE").id for _ in range(BACKLOG)]
    w.stop(grace=0.2)  # a rolling deploy: the job goes back to the queue
    with rt.engine.connect() as conn:
        status = conn.execute(sa.select(media_queue.c.status).where(media_queue.c.job_id == first.id)).scalar_one()
    assert status == "queued"
    assert _next(rt) == first.id
    assert _next(rt) == backlog[0]
