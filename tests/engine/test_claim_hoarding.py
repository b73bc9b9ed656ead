"""A worker holds at most what its slots can start soon: after a batch that ran all in process (which makes the next
claim a big one), jobs that need the normal path beyond its free slots and its small prefetch go straight back to
the queue."""

from __future__ import annotations

import time

import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.runtime import Runtime
from mediamill.store.tables import media_queue, workflow_jobs
from tests.engine.conftest import workflow
from tests.helpers import wait_until

BURST = 30


def _held(rt: Runtime, worker_id: str) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(media_queue)
                                .where(media_queue.c.worker_id == worker_id,
                                       media_queue.c.status == "processing")).scalar_one())


def test_a_worker_after_an_in_process_batch_does_not_hoard_slow_jobs(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-NOOP", [{"name": "a", "action": "noop"}])
    workflow(rt, "WF-SLOW", [{"name": "s", "action": "sleep", "params": {"seconds": 1}}])
    a = workers({"*": 2})
    warm = [submit("WF-NOOP").id for _ in range(3)]  # they run in process: the pool's next claim is a big one
    wait_until(lambda: all(ops.get_job(rt.engine, j)["status"] == "completed" for j in warm), timeout=30)
    ops.pause_queue(rt.engine, "q")
    burst = [submit("WF-SLOW").id for _ in range(BURST)]
    ops.resume_queue(rt.engine, "q")
    wait_until(lambda: _held(rt, a.worker_id) > 0, timeout=30)
    most = 0
    until = time.monotonic() + 2.5
    while time.monotonic() < until:
        most = max(most, _held(rt, a.worker_id))
        time.sleep(0.02)
    # its 2 slots, the prefetch (these 1 s jobs are short), and jobs whose last step ended: their slot is taken over
    # while their finish is written
    bound = 2 + rt.settings.prefetch + 2
    assert most <= bound, f"a 2-slot worker held {most} jobs"
    with rt.engine.connect() as conn:  # what it gave back was never started: still queued, no attempt counted
        rows = conn.execute(sa.select(media_queue.c.attempts, workflow_jobs.c.status)
                            .join(workflow_jobs, workflow_jobs.c.id == media_queue.c.job_id)
                            .where(media_queue.c.status == "queued")).all()
    assert len(rows) >= BURST - 8 - bound and all(tuple(r) == (0, "queued") for r in rows), rows
    b = workers({"*": 2})  # another worker finds the rest waiting, not hoarded by the first
    wait_until(lambda: _held(rt, b.worker_id) > 0, timeout=15)
    assert ops.get_job(rt.engine, burst[-1])["status"] in ("queued", "processing", "completed")
