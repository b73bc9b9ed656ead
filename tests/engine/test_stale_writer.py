"""Stale writers: a worker whose claim was rescued and completed elsewhere writes nothing more about the job
(no progress, no events after the final one), logs the loss once and drops the job. The same holds when the
worker itself claims the rescued job again: its earlier run's attempt is stale, and is fenced off."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.engine import housekeeping
from mediamill.engine.breakers import Gate
from mediamill.engine.outcomes import Continue
from mediamill.engine.runner import JobRunner, LostClaim
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store.tables import job_events, media_queue, step_executions, workflow_jobs
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import workflow
from tests.helpers import wait_until


def _progress(rt: Runtime, job_id: int) -> float | None:
    with rt.engine.connect() as conn:
        return conn.execute(sa.select(workflow_jobs.c.progress_percent).where(workflow_jobs.c.id == job_id)
                            ).scalar_one()


def _completed_by_b(rt: Runtime, job_id: int, lost_by: str, workflow_code: str, total_steps: int) -> int:
    """The worker ``lost_by`` was cut off: its job is rescued, claimed by worker B and completed there. The id of
    the job's last event, the final one."""
    with rt.engine.begin() as conn:
        assert housekeeping._rescue_one(conn, job_id, lost_by, 5, None) == 1
        b = tx.claim(conn, worker_id="worker-B", queue=None, limit=1, lease_seconds=30)
        assert [c.job["id"] for c in b] == [job_id]
        done = tx.Finish(job=b[0].job, status="completed", workflow_code=workflow_code, workflow_type="generic",
                         workflow_version=1, total_steps=total_steps)
        assert tx.finish_jobs(conn, "worker-B", [done]) == [job_id]
        return int(conn.execute(sa.select(sa.func.max(job_events.c.id))
                                .where(job_events.c.job_id == job_id)).scalar_one())


def test_a_worker_that_lost_its_claim_writes_nothing_more(rt: Runtime, submit, workers,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    workflow(rt, "WF-STALE", [{"name": "long", "action": "sleep", "params": {"seconds": 6}}])
    job = submit("WF-STALE")
    a = workers({"*": 2})
    wait_until(lambda: (_progress(rt, job.id) or 0) > 0, timeout=30)  # A's step runs and reports progress
    final_event = _completed_by_b(rt, job.id, a.worker_id, "WF-STALE", total_steps=1)  # A is cut off
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


# ----------------------------------------------------------------------------- the same worker claims again
def _snapshot(rt: Runtime, job_id: int) -> tuple[object, ...]:
    """Everything a stale run could change about the job."""
    with rt.engine.connect() as conn:
        job_row = conn.execute(sa.select(workflow_jobs.c.status, workflow_jobs.c.progress_percent,
                                         workflow_jobs.c.current_step, workflow_jobs.c.retry_count)
                               .where(workflow_jobs.c.id == job_id)).one()
        execs = conn.execute(sa.select(step_executions.c.id, step_executions.c.step_name, step_executions.c.status,
                                       step_executions.c.progress_percent)
                             .where(step_executions.c.job_id == job_id).order_by(step_executions.c.id)).all()
        events = conn.execute(sa.select(sa.func.count()).select_from(job_events)
                              .where(job_events.c.job_id == job_id)).scalar_one()
        queue = conn.execute(sa.select(media_queue.c.status, media_queue.c.worker_id, media_queue.c.attempts)
                             .where(media_queue.c.job_id == job_id)).all()
    return tuple(job_row), [tuple(e) for e in execs], events, [tuple(q) for q in queue]


def _beat(w: Worker, runner: JobRunner, claims: dict[int, int]) -> None:
    """A beat of ``w``'s lifeline with ``runner`` running and ``claims`` (job id -> attempt) in hand: the run's
    progress is written in the beat's transaction, only where the heartbeat confirmed the claim. The clock is
    put a ``progress_seconds`` ahead so that the progress is due."""
    with w._lock:
        w.running[runner.job["id"]] = runner
        w._owned = dict(claims)
    ahead = time.monotonic() + 2 * w.settings.progress_seconds
    w._beat(ahead, w.settings.effective_heartbeat_seconds, age=False, mark_workers=False)


def test_a_run_whose_attempt_was_rescued_is_fenced_off_when_its_worker_claims_the_job_again(
        rt: Runtime, submit, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    workflow(rt, "WF-AGAIN", [{"name": "a", "action": "noop"}, {"name": "b", "action": "noop"}])
    job = submit("WF-AGAIN")
    w = Worker(rt, pools={"elsewhere": 1})  # never started: its runners are driven here, step by step
    try:
        with rt.engine.begin() as conn:
            first = tx.claim(conn, worker_id=w.worker_id, queue=None, limit=1, lease_seconds=30)
        assert [c.attempts for c in first] == [1]
        wf = w.workflow(first[0].job["workflow_id"], first[0].job["workflow_version"])
        stale = JobRunner(w.services, first[0], wf)  # attempt 1 starts step a and reports progress
        stale._resolve_input()
        exec_ids = stale._start([0])
        started = utcnow()
        stale.progress(0, 40.0, exec_ids[0])
        _beat(w, stale, {job.id: 1})  # W's heartbeat writes it
        with rt.engine.begin() as conn:  # W is cut off: its lease lapses and the rescue puts the job back
            conn.execute(media_queue.update().where(media_queue.c.job_id == job.id)
                         .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=5) == 1
        with rt.engine.begin() as conn:  # the link is back: W claims the job again while attempt 1 is alive
            second = tx.claim(conn, worker_id=w.worker_id, queue=None, limit=1, lease_seconds=30)
        assert [c.attempts for c in second] == [2]
        before = _snapshot(rt, job.id)
        assert before[1] == [(exec_ids[0], "a", "interrupted", 40)]

        # every write the attempt-1 run could still make is refused and changes nothing
        stale.progress(0, 70.0, exec_ids[0])  # the step's next report waits for the heartbeat, which
        _beat(w, stale, {job.id: 1})  # finds attempt 1's claim gone (the same worker holds attempt 2): dropped
        assert stale.lost
        # a unit's completion and a decision wait for the job's next write (``JobRunner._defer``), which is refused
        # with them
        assert isinstance(stale._complete([0], exec_ids, started, [{"data": {}, "outputs": []}], {0: Gate(True)}),
                          Continue)
        stale._event("decision", "b", {"when": "true", "result": True})
        with pytest.raises(LostClaim):
            stale._start([1])
        stale._finish("completed")
        stale._requeue_interrupted("handed back by a stopping worker")
        with rt.engine.begin() as conn:
            assert tx.heartbeat(conn, worker_id=w.worker_id, lease_seconds=30, claims={job.id: 1}, status="running",
                                jobs_done=0) == (set(), set())  # no lease extended, so no progress written
            assert not tx.requeue(conn, job=first[0].job, worker_id=w.worker_id, delay=0, reason="retry",
                                  event={}, count_retry=True)
            done = tx.Finish(job=first[0].job, status="completed", workflow_code="WF-AGAIN",
                             workflow_type="generic", workflow_version=1, total_steps=2)
            assert tx.finish_jobs(conn, w.worker_id, [done]) == []  # the fast path's batched finish
        assert _snapshot(rt, job.id) == before

        JobRunner(w.services, second[0], wf).run()  # attempt 2 runs normally to the end
        with rt.engine.connect() as conn:
            status = conn.execute(sa.select(workflow_jobs.c.status).where(workflow_jobs.c.id == job.id)
                                  ).scalar_one()
            execs = conn.execute(sa.select(step_executions.c.step_name, step_executions.c.status)
                                 .where(step_executions.c.job_id == job.id).order_by(step_executions.c.id)).all()
        assert status == "completed"
        assert [tuple(e) for e in execs] == [("a", "interrupted"), ("a", "completed"), ("b", "completed")]
        with rt.engine.begin() as conn:  # and attempt 1 still cannot touch the finished job
            assert tx.finish_jobs(conn, w.worker_id, [done]) == []
            assert tx.heartbeat(conn, worker_id=w.worker_id, lease_seconds=30, claims={job.id: 1}, status="running",
                                jobs_done=0) == (set(), set())
        lost = [r for r in caplog.records if "lost its claim" in r.getMessage()]
        assert len(lost) == 1, [r.getMessage() for r in lost]
    finally:
        w.executor.shutdown(wait=True)
        w.children.close()
        w._unsubscribe()


def test_a_worker_that_claims_a_rescued_job_again_completes_it_through_the_new_attempt_only(
        rt: Runtime, submit, workers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    workflow(rt, "WF-TWICE", [{"name": "long", "action": "sleep", "params": {"seconds": 6}}])
    job = submit("WF-TWICE")
    a = workers({"*": 2})
    wait_until(lambda: (_progress(rt, job.id) or 0) > 0, timeout=30)  # attempt 1 runs and reports progress
    first = a.running[job.id]
    with rt.engine.begin() as conn:  # A was cut off: the job is rescued; A's free slot claims it again
        assert housekeeping._rescue_one(conn, job.id, a.worker_id, 5, None) == 1
    wait_until(lambda: a.running.get(job.id) not in (None, first), timeout=15)
    reclaimed = time.monotonic()
    wait_until(lambda: first.lost, timeout=15)  # attempt 1 stops now, not when its 6 s step ends
    assert time.monotonic() - reclaimed < 4
    wait_until(lambda: job.id not in a.running, timeout=60)  # attempt 2 runs its step out
    with rt.engine.connect() as conn:
        status = conn.execute(sa.select(workflow_jobs.c.status).where(workflow_jobs.c.id == job.id)).scalar_one()
        execs = conn.execute(sa.select(step_executions.c.status).where(step_executions.c.job_id == job.id)
                             .order_by(step_executions.c.id)).scalars().all()
        attempts = conn.execute(sa.select(job_events.c.data).where(job_events.c.job_id == job.id,
                                                                   job_events.c.event_type == "status")).scalars().all()
    assert status == "completed"
    assert execs == ["interrupted", "completed"]  # the rescue closed attempt 1's execution; attempt 2 ran it
    assert [d["attempt"] for d in attempts if d.get("status") == "processing"] == [1, 2]
    lost = [r for r in caplog.records if "lost its claim" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]


# ----------------------------------------------------------------------------- the database goes away mid-job
class _Outage:
    """The worker's view of the database on a host whose cable is pulled: while ``down``, every new transaction
    fails at once, as a fresh connection to the cut-off server does ("Network is unreachable")."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.down = threading.Event()
        self.refused = 0

    def _check(self) -> None:
        if self.down.is_set():
            self.refused += 1
            raise sa.exc.OperationalError("connect", {}, OSError("Network is unreachable"))

    def begin(self) -> Any:
        self._check()
        return self.engine.begin()

    def connect(self) -> Any:
        self._check()
        return self.engine.connect()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def test_a_worker_cut_off_when_its_step_ends_reports_the_lost_claim_once_the_link_is_back(
        rt: Runtime, submit, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The step ends while the database is unreachable (its result cannot be written) and the job is rescued and
    completed elsewhere meanwhile: once the database answers again the run finds its claim gone, logs the loss
    once and drops the job, writing nothing. (It used to count as a crash: the hand-back was refused in silence,
    or given up while the link was still down, and the loss was never logged.)"""
    caplog.set_level(logging.WARNING)
    workflow(rt, "WF-CUTOFF", [{"name": "first", "action": "noop"},
                               {"name": "nap", "action": "sleep", "params": {"seconds": 1}},
                               {"name": "last", "action": "noop"}])
    job = submit("WF-CUTOFF")
    w = Worker(rt, pools={"elsewhere": 1})  # never started: one job is run here as its job thread would run it
    outage = _Outage(rt.engine)
    w.engine = outage  # type: ignore[assignment]  # (its heartbeat)
    w.services = dataclasses.replace(w.services, engine=outage)  # (what its runs write through)
    recovering = threading.Event()
    progress, recover = JobRunner.progress, JobRunner.recover

    def progress_then_cut(self: JobRunner, i: int, pct: float, exec_id: int) -> None:
        progress(self, i, pct, exec_id)
        outage.down.set()  # the cable is pulled while the step runs: its first report comes after the last write

    def noted_recover(self: JobRunner, *args: Any, **kwargs: Any) -> None:
        recovering.set()
        recover(self, *args, **kwargs)

    monkeypatch.setattr(JobRunner, "progress", progress_then_cut)
    monkeypatch.setattr(JobRunner, "recover", noted_recover)
    try:
        with rt.engine.begin() as conn:
            claimed = tx.claim(conn, worker_id=w.worker_id, queue=None, limit=1, lease_seconds=30)
        assert [c.job["id"] for c in claimed] == [job.id]
        wf = w.workflow(claimed[0].job["workflow_id"], claimed[0].job["workflow_version"])
        w.inflight["elsewhere"] += 1
        with w._lock:
            w._owned[job.id] = claimed[0].attempts
        thread = threading.Thread(target=w._run_job, args=("elsewhere", claimed[0], wf), daemon=True)
        thread.start()
        wait_until(outage.down.is_set, timeout=30, message="the nap step reporting progress")
        final_event = _completed_by_b(rt, job.id, w.worker_id, "WF-CUTOFF", total_steps=3)
        # the step ended and its result could not be written: the run waits for the database to answer
        wait_until(recovering.is_set, timeout=30, message="the run finding the database gone")
        tried = outage.refused
        wait_until(lambda: outage.refused >= tried + 3, timeout=30, message="the run trying again while cut off")
        assert thread.is_alive() and not [r for r in caplog.records if "lost its claim" in r.getMessage()]
        outage.down.clear()  # the cable is back
        thread.join(timeout=30)
        assert not thread.is_alive()
        with rt.engine.connect() as conn:
            late = conn.execute(sa.select(job_events.c.event_type, job_events.c.data)
                                .where(job_events.c.job_id == job.id, job_events.c.id > final_event)).all()
            status, progress = conn.execute(sa.select(workflow_jobs.c.status, workflow_jobs.c.progress_percent)
                                            .where(workflow_jobs.c.id == job.id)).one()
            mine = conn.execute(sa.select(step_executions.c.step_name, step_executions.c.status)
                                .where(step_executions.c.job_id == job.id,
                                       step_executions.c.worker_id == w.worker_id)
                                .order_by(step_executions.c.id)).all()
            queued = conn.execute(sa.select(sa.func.count()).select_from(media_queue)
                                  .where(media_queue.c.job_id == job.id)).scalar_one()
        assert late == [] and status == "completed" and progress == 100 and queued == 0
        assert [tuple(m) for m in mine] == [("first", "completed"), ("nap", "interrupted")]
        assert job.id not in w.running and job.id not in w._owned and w.inflight["elsewhere"] == 0
        lost = [r for r in caplog.records if "lost its claim" in r.getMessage()]
        assert len(lost) == 1, [r.getMessage() for r in lost]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    finally:
        w.executor.shutdown(wait=True)
        w.children.close()
        w._unsubscribe()
