"""``finished_at`` is written on every terminal state, on every path that ends a job; ``completed_at``
keeps its narrow meaning (completed or partial); a manual retry clears both."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from mediamill.engine import housekeeping
from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmittedJob
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store.tables import media_queue
from mediamill.store.tables import workflow_jobs as wj
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import workflow
from tests.helpers import wait_until

FINAL = ("completed", "partial", "failed", "cancelled")
SLOW = {"name": "slow", "action": "sleep", "params": {"seconds": 30}}  # runs in a child: the normal runner
BAD = {"name": "bad", "action": "fail", "params": {"error_class": "invalid_input"}}


def _done(rt: Runtime, job_id: int) -> dict:
    return wait_until(lambda: (d := ops.get_job(rt.engine, job_id))["status"] in FINAL and d, timeout=30,
                      message=f"job {job_id} finished")


def _when(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def _assert_finished(d: dict, status: str, before: datetime) -> None:
    assert d["status"] == status
    finished = _when(d["finished_at"])
    assert before - timedelta(seconds=1) <= finished <= utcnow() + timedelta(seconds=1)
    if status in ("completed", "partial"):
        assert d["completed_at"] == d["finished_at"]
    else:
        assert d["completed_at"] is None  # completed_at keeps its meaning


def test_every_outcome_of_the_runners_sets_finished_at(rt: Runtime, submit: Callable[..., SubmittedJob],
                                                       workers) -> None:
    quick = {"name": "quick", "action": "sleep", "params": {"seconds": 0}}
    workflow(rt, "WF-FAST-OK", [{"name": "a", "action": "noop"}])  # in-process fast path
    workflow(rt, "WF-FAST-BAD", [BAD])
    workflow(rt, "WF-SLOW-OK", [quick])  # the normal runner (an isolated step)
    workflow(rt, "WF-SLOW-BAD", [quick, BAD])
    workflow(rt, "WF-PARTIAL", [quick, {**BAD, "on_failure": "continue"}])
    before = utcnow()
    jobs = {code: submit(code) for code in ("WF-FAST-OK", "WF-FAST-BAD", "WF-SLOW-OK", "WF-SLOW-BAD", "WF-PARTIAL")}
    workers({"q": 2})
    expected = {"WF-FAST-OK": "completed", "WF-FAST-BAD": "failed", "WF-SLOW-OK": "completed",
                "WF-SLOW-BAD": "failed", "WF-PARTIAL": "partial"}
    for code, job in jobs.items():
        _assert_finished(_done(rt, job.id), expected[code], before)


def test_cancelling_a_waiting_or_a_running_job_sets_finished_at(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-CANCEL", [SLOW])
    ops.pause_queue(rt.engine, "q")
    before = utcnow()
    waiting = submit("WF-CANCEL")
    assert ops.cancel_job(rt.engine, waiting.id, by="test") == "cancelled"
    _assert_finished(ops.get_job(rt.engine, waiting.id), "cancelled", before)

    running = submit("WF-CANCEL")
    ops.resume_queue(rt.engine, "q")
    workers({"q": 1})
    wait_until(lambda: ops.get_job(rt.engine, running.id)["status"] == "processing", timeout=20)
    assert ops.cancel_job(rt.engine, running.id, by="test") == "cancelling"
    _assert_finished(_done(rt, running.id), "cancelled", before)


def test_a_poison_job_failed_by_the_rescuer_gets_finished_at(rt: Runtime, submit) -> None:
    workflow(rt, "WF-POISON", [SLOW])
    job = submit("WF-POISON")
    before = utcnow()
    with rt.engine.begin() as conn:
        assert len(tx.claim(conn, worker_id="gone", queue="q", limit=1, lease_seconds=30)) == 1
        conn.execute(media_queue.update().where(media_queue.c.job_id == job.id)
                     .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=1) == 1
    d = ops.get_job(rt.engine, job.id)
    _assert_finished(d, "failed", before)
    assert d["dead_letter"] is not None


def test_a_manual_retry_clears_finished_at_until_the_new_run_ends(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-AGAIN", [{"name": "flaky", "action": "fail", "params": {"error_class": "invalid_input",
                                                                              "times": 1}}])
    job = submit("WF-AGAIN")
    w = workers({"q": 1})
    first = _done(rt, job.id)
    assert first["status"] == "failed" and first["finished_at"] is not None
    w.stop(grace=1)
    ops.retry_job(rt.engine, job.id, by="test")
    again = ops.get_job(rt.engine, job.id)
    assert (again["status"], again["finished_at"], again["completed_at"]) == ("queued", None, None)
    workers({"q": 1})
    second = _done(rt, job.id)
    assert second["status"] == "completed"
    assert _when(second["finished_at"]) >= _when(first["finished_at"])


def test_pruning_reads_finished_at_so_old_failed_and_cancelled_jobs_go(rt: Runtime, submit) -> None:
    workflow(rt, "WF-OLD", [SLOW])
    ops.pause_queue(rt.engine, "q")
    old, recent = submit("WF-OLD"), submit("WF-OLD")
    for job in (old, recent):
        ops.cancel_job(rt.engine, job.id, by="test")
    with rt.engine.begin() as conn:  # finished long ago, touched since (updated_at is no finish time)
        conn.execute(wj.update().where(wj.c.id == old.id)
                     .values(finished_at=utcnow() - timedelta(days=40), updated_at=utcnow()))
    assert housekeeping.prune_finished_jobs(rt.engine, rt.storage, days=30) == 1
    assert [j["id"] for j in ops.list_jobs(rt.engine)] == [recent.id]
