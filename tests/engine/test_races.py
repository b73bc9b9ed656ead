"""Guarded transitions: a rescued worker's late completion is refused (River #1302), poison jobs, retention."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from mediamill.engine import housekeeping
from mediamill.engine import operations as ops
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store.tables import media_queue, workflow_jobs
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import workflow


def _claim(rt: Runtime, worker: str) -> tx.Claimed:
    with rt.engine.begin() as conn:
        got = tx.claim(conn, worker_id=worker, queue="q", limit=1, lease_seconds=30)
    assert len(got) == 1
    return got[0]


def _expire(rt: Runtime, job_id: int) -> None:
    with rt.engine.begin() as conn:
        conn.execute(media_queue.update().where(media_queue.c.job_id == job_id)
                     .values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def _finish(job: dict, status: str = "completed") -> tx.Finish:
    return tx.Finish(job=job, status=status, workflow_code="WF-RACE", workflow_type="generic", workflow_version=1,
                     total_steps=1)


def test_late_completion_from_rescued_worker_is_refused(rt: Runtime, submit) -> None:
    workflow(rt, "WF-RACE", [{"name": "a", "action": "noop"}])
    job = submit("WF-RACE")
    a = _claim(rt, "worker-A")
    _expire(rt, job.id)  # A stops heart-beating (GC pause, network partition …)
    assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=3) == 1
    b = _claim(rt, "worker-B")
    assert b.job["id"] == job.id and b.attempts == 2
    with rt.engine.begin() as conn:  # A wakes up and tries every write it could make
        assert tx.finish_jobs(conn, "worker-A", [_finish(a.job)]) == []
        assert not tx.still_owner(conn, job=a.job, worker_id="worker-A", lease_seconds=30)
        assert not tx.requeue(conn, job=a.job, worker_id="worker-A", delay=0, reason="retry", event={},
                              count_retry=True)
    assert ops.get_job(rt.engine, job.id)["status"] == "processing"
    with rt.engine.begin() as conn:
        assert tx.finish_jobs(conn, "worker-B", [_finish(b.job)]) == [job.id]
        assert tx.finish_jobs(conn, "worker-A", [_finish(a.job, "failed")]) == []  # still refused after
    d = ops.get_job(rt.engine, job.id)
    assert d["status"] == "completed" and d["rescue_count"] == 1
    assert [e["event_type"] for e in d["events"]].count("rescue") == 1


def test_rescuer_never_touches_a_finished_or_live_job(rt: Runtime, submit) -> None:
    workflow(rt, "WF-RACE", [{"name": "a", "action": "noop"}])
    live, done = submit("WF-RACE"), submit("WF-RACE")
    _claim(rt, "worker-A")
    c2 = _claim(rt, "worker-A")
    with rt.engine.begin() as conn:
        tx.finish_jobs(conn, "worker-A", [_finish(c2.job)])
    assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=3) == 0  # the live lease holds
    assert {ops.get_job(rt.engine, j.id)["status"] for j in (live, done)} == {"processing", "completed"}


def test_poison_job_is_dead_lettered_after_max_rescues(rt: Runtime, submit) -> None:
    workflow(rt, "WF-RACE", [{"name": "a", "action": "noop"}])
    job = submit("WF-RACE")
    for n in range(3):
        _claim(rt, f"doomed-{n}")
        _expire(rt, job.id)
        housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=3)
    d = ops.get_job(rt.engine, job.id)
    assert d["status"] == "failed" and d["rescue_count"] == 3 and "poison" in d["error_message"]
    dl = ops.list_dead_letters(rt.engine)
    assert len(dl) == 1 and dl[0]["job_id"] == job.id
    with rt.engine.connect() as conn:
        types = conn.execute(sa.text("SELECT event_type FROM workflow_notifications WHERE job_id = :j"),
                             {"j": job.id}).scalars().all()
        assert types == ["job.dead_lettered"]
        assert conn.execute(sa.select(sa.func.count()).select_from(media_queue)).scalar() == 0


def test_pruning_removes_old_finished_jobs_and_their_files(rt: Runtime, submit) -> None:
    workflow(rt, "WF-RACE", [{"name": "a", "action": "noop"}])
    old, recent = submit("WF-RACE"), submit("WF-RACE")
    for _job in (old, recent):
        c = _claim(rt, "w")
        with rt.engine.begin() as conn:
            tx.finish_jobs(conn, "w", [_finish(c.job)])
    with rt.engine.begin() as conn:
        conn.execute(workflow_jobs.update().where(workflow_jobs.c.id == old.id)
                     .values(completed_at=utcnow() - timedelta(days=40), finished_at=utcnow() - timedelta(days=40)))
    key = ops.get_job(rt.engine, old.id)["input_key"]
    assert housekeeping.prune_finished_jobs(rt.engine, rt.storage, days=30) == 1
    assert [j["id"] for j in ops.list_jobs(rt.engine)] == [recent.id]
    assert not rt.storage.exists(key)
