"""A job's run is built from ``RunServices`` alone: here with no worker at all — the claim is taken by hand, the
services are assembled from a runtime, and what the run reports back (a finished job, a delayed wake-up) arrives
through the two callbacks it was given."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from mediamill.engine.breakers import BreakerConfig, Breakers
from mediamill.engine.children import ChildPool
from mediamill.engine.retry import RetryPolicy
from mediamill.engine.runner import JobRunner
from mediamill.engine.services import RunServices
from mediamill.engine.submit import SubmittedJob
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store import workflow_repo
from mediamill.store.tables import step_executions, workflow_jobs
from tests.engine.conftest import workflow
from tests.helpers import wait_until


def test_a_runner_runs_a_job_from_its_services_without_a_worker(rt: Runtime, submit: Callable[..., SubmittedJob],
                                                                 tmp_path: Any) -> None:
    workflow(rt, "WF-SVC", [{"name": "a", "action": "noop"},
                            {"name": "boom", "action": "fail", "params": {"times": 1}, "on_failure": "retry",
                             "retry_count": 1},
                            {"name": "b", "action": "noop"}])
    job = submit("WF-SVC")
    finished: list[tuple[int, str, str, str | None]] = []
    wakes: list[tuple[str | None, float]] = []
    children = ChildPool(size=1, max_tasks=10, limits=rt.settings.limits)
    services = RunServices(
        runtime=rt, settings=rt.settings, engine=rt.engine, storage=rt.storage, children=children,
        breakers=Breakers(rt.engine, BreakerConfig(window_seconds=60, min_calls=100, failure_rate=1.0,
                                                   cooldown_seconds=1)),
        retry_policy=RetryPolicy(0.01, 0.05), worker_id="by-hand", scratch_dir=tmp_path / "scratch",
        wake_later=lambda queue, delay: wakes.append((queue, delay)),
        job_finished=lambda j, status, code, klass: finished.append((j["id"], status, code, klass)))
    try:
        with rt.engine.begin() as conn:
            claimed = tx.claim(conn, worker_id="by-hand", queue=None, limit=1, lease_seconds=30)
            wf = workflow_repo.get_workflow(conn, "WF-SVC")
        JobRunner(services, claimed[0], wf).run()  # step boom fails: retried later, so the job goes back
        assert wakes and wakes[0][0] == "q" and wakes[0][1] > 0 and not finished
        with rt.engine.connect() as conn:
            status = conn.execute(sa.select(workflow_jobs.c.status).where(workflow_jobs.c.id == job.id)).scalar()
            runs = conn.execute(sa.select(step_executions.c.step_name, step_executions.c.status)
                                .where(step_executions.c.job_id == job.id).order_by(step_executions.c.id)).all()
        assert status == "queued"
        assert [tuple(r) for r in runs] == [("a", "completed"), ("boom", "failed")]
        def claim_when_due() -> list[tx.Claimed]:  # (empty until its retry is due)
            with rt.engine.begin() as conn:
                return tx.claim(conn, worker_id="by-hand", queue=None, limit=1, lease_seconds=30)

        again = wait_until(claim_when_due, timeout=30, interval=0.01, message="the retry coming due")
        assert [c.job["id"] for c in again] == [job.id]
        JobRunner(services, again[0], wf).run()
        assert finished == [(job.id, "completed", "WF-SVC", None)]
    finally:
        children.close()
