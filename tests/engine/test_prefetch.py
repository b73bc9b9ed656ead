"""The prefetch: while a pool's jobs are short, a worker holds one more job than its slots, ready to start the
moment a slot frees. The held job is not started (still ``queued``, no step run, its clock not running), a stopping
worker gives it back in its place with its attempt, and long jobs are never held beyond the free slots."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.runtime import Runtime
from mediamill.store.tables import media_queue, step_executions, workflow_jobs
from tests.engine.conftest import FAST, workflow
from tests.helpers import make_runtime, wait_until

FINAL = ("completed", "partial", "failed", "cancelled")


def _held(rt: Runtime, worker_id: str) -> list[tuple[int, str]]:
    """(job id, job status) of the claims the worker holds."""
    with rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            sa.select(media_queue.c.job_id, workflow_jobs.c.status)
            .join(workflow_jobs, workflow_jobs.c.id == media_queue.c.job_id)
            .where(media_queue.c.worker_id == worker_id, media_queue.c.status == "processing")).all()]


def _burst(rt: Runtime, submit, code: str, n: int) -> list[int]:
    ops.pause_queue(rt.engine, "q")
    ids = [submit(code).id for _ in range(n)]
    ops.resume_queue(rt.engine, "q")
    return ids


def _watch(rt: Runtime, worker_id: str, seconds: float) -> list[tuple[float, list[tuple[int, str]]]]:
    """The worker's held claims, sampled about every 10 ms for ``seconds``."""
    seen: list[tuple[float, list[tuple[int, str]]]] = []
    until = time.monotonic() + seconds

    def sample() -> bool:
        seen.append((time.monotonic(), _held(rt, worker_id)))
        return seen[-1][0] >= until

    wait_until(sample, timeout=seconds + 10, interval=0.01, message=f"{seconds} s of samples")
    return seen


def _longest_wait(seen: list[tuple[float, list[tuple[int, str]]]]) -> float:
    """The longest a held job stayed not started (``queued``). A claim with a free slot starts within
    milliseconds; a prefetched one waits for the running job to end."""
    first: dict[int, float] = {}
    longest = 0.0
    for at, held in seen:
        waiting = {job for job, status in held if status == "queued"}
        first = {job: first.get(job, at) for job in waiting}
        longest = max([longest, *(at - t for t in first.values())])
    return longest


def test_short_jobs_keep_one_ready_and_it_starts_when_the_slot_frees(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-SHORT", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.4}}])
    w = workers({"q": 1})
    first = submit("WF-SHORT").id  # the pool learns that its jobs are short
    wait_until(lambda: ops.get_job(rt.engine, first)["status"] in FINAL, timeout=30)
    jobs = _burst(rt, submit, "WF-SHORT", 4)
    seen = _watch(rt, w.worker_id, 1.5)
    # one running, one held and not started (queued, no step), and at most one more whose last step just ended
    assert max(len(h) for _, h in seen) in (2, 3), seen
    assert _longest_wait(seen) >= 0.2, "no prefetched job waited for the slot"
    for j in jobs:
        wait_until(lambda j=j: ops.get_job(rt.engine, j)["status"] in FINAL, timeout=30)
    assert all(ops.get_job(rt.engine, j)["status"] == "completed" for j in jobs)
    with rt.engine.connect() as conn:
        steps = {r.job_id: r for r in conn.execute(sa.select(step_executions).where(
            step_executions.c.job_id.in_(jobs))).all()}
        began = dict(conn.execute(sa.select(workflow_jobs.c.id, workflow_jobs.c.started_at)
                                  .where(workflow_jobs.c.id.in_(jobs))).all())
    order = sorted(jobs, key=lambda j: steps[j].started_at)
    # one slot: each job ran after the one before it, and its clock started when it got the slot, not at its claim
    for before, after in itertools.pairwise(order):
        assert steps[after].started_at >= steps[before].completed_at - timedelta(milliseconds=5)
        assert began[after] >= steps[before].started_at + timedelta(seconds=0.3)


def test_a_stopping_worker_gives_its_prefetched_job_back_unstarted(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-SHORT", [{"name": "nap", "action": "sleep", "params": {"seconds": 1.0}}])
    w = workers({"q": 1})
    first = submit("WF-SHORT").id
    wait_until(lambda: ops.get_job(rt.engine, first)["status"] in FINAL, timeout=30)
    jobs = _burst(rt, submit, "WF-SHORT", 3)
    # the running job's row says queued until its runner's first write, so the prefetched one is told apart only
    # once the running one says processing
    held = wait_until(lambda: (h := _held(rt, w.worker_id)) and {s for _, s in h} == {"processing", "queued"} and h,
                      timeout=15, message="a prefetched job")
    prefetched = next(j for j, s in held if s == "queued")
    w.stop(grace=0.2)
    d = ops.get_job(rt.engine, prefetched)
    assert d["status"] == "queued" and d["started_at"] is None
    with rt.engine.connect() as conn:
        entry = conn.execute(sa.select(media_queue).where(media_queue.c.job_id == prefetched)).mappings().one()
        ran = conn.execute(sa.select(sa.func.count()).select_from(step_executions)
                           .where(step_executions.c.job_id == prefetched)).scalar_one()
    assert entry["status"] == "queued" and entry["worker_id"] is None and entry["attempts"] == 0 and ran == 0
    assert all(ops.get_job(rt.engine, j)["status"] in ("queued", "completed") for j in jobs)


def test_long_jobs_are_held_only_for_free_slots(backend_url: str, tmp_path: Path, input_file: Path) -> None:
    rt = make_runtime(tmp_path / "data-long", backend_url, **{**FAST, "prefetch_max_seconds": 0.2})
    from mediamill.engine.worker import Worker

    try:
        workflow(rt, "WF-LONG", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.5}}])

        def submit_one() -> int:
            return submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, input_file),
                                                       workflow_code="WF-LONG")).id

        w = Worker(rt, pools={"q": 1}).start()
        try:
            first = submit_one()
            wait_until(lambda: ops.get_job(rt.engine, first)["status"] in FINAL, timeout=30)
            ops.pause_queue(rt.engine, "q")
            [submit_one() for _ in range(3)]
            ops.resume_queue(rt.engine, "q")
            seen = _watch(rt, w.worker_id, 1.5)
            # the running job, and at most the one whose last step just ended: never one waiting for the slot
            assert max(len(h) for _, h in seen) <= 2
            assert _longest_wait(seen) < 0.2, seen
        finally:
            w.stop(grace=1)
    finally:
        rt.close()


def test_a_workflow_not_yet_seen_is_not_prefetched_even_in_a_pool_of_short_jobs(rt: Runtime, submit,
                                                                               workers) -> None:
    """One pool, two workflows: the pool prefetches its known short jobs, but a job of a workflow it has not run
    yet (it could take an hour) is held only for a free slot."""
    workflow(rt, "WF-SHORT", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.05}}])
    workflow(rt, "WF-NEW", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.8}}])
    w = workers({"q": 1})
    first = submit("WF-SHORT").id
    wait_until(lambda: ops.get_job(rt.engine, first)["status"] in FINAL, timeout=30)
    _burst(rt, submit, "WF-NEW", 3)
    seen = _watch(rt, w.worker_id, 0.7)  # while the first of them runs
    # the running job, and at most one whose last step just ended: never one waiting for the slot
    assert max(len(h) for _, h in seen) <= 2, seen
    assert _longest_wait(seen) < 0.2, seen


def test_a_job_given_back_is_not_taken_again_until_a_slot_frees(rt: Runtime, submit, workers,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim gives back a job it may not hold (an unseen workflow beyond the free slots) — and then waits for a
    slot to free before it prefetches again: it does not take and give back the same job in a loop (each time a
    write transaction and a wake-up of every worker, itself included) while that job waits."""
    from mediamill.store import lifecycle

    claims: list[float] = []
    claim = lifecycle.claim

    def counted(*args: Any, **kw: Any) -> list[lifecycle.Claimed]:
        got = claim(*args, **kw)
        if got:
            claims.append(time.monotonic())
        return got

    monkeypatch.setattr(lifecycle, "claim", counted)
    workflow(rt, "WF-SHORT", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.05}}])
    workflow(rt, "WF-NEW", [{"name": "nap", "action": "sleep", "params": {"seconds": 1.0}}])
    w = workers({"q": 1})
    first = submit("WF-SHORT").id
    wait_until(lambda: ops.get_job(rt.engine, first)["status"] in FINAL, timeout=30)
    long = _burst(rt, submit, "WF-NEW", 2)
    wait_until(lambda: ops.get_job(rt.engine, long[0])["status"] == "processing", timeout=30)
    since = time.monotonic()
    # the first long job runs (1 s); the second waits in the queue for the slot, then is claimed once
    wait_until(lambda: ops.get_job(rt.engine, long[0])["status"] in FINAL, timeout=30)
    during = [t for t in claims if t > since]
    assert len(during) <= 1, f"{len(during)} claims that found a job in {time.monotonic() - since:.1f} s"
    wait_until(lambda: all(ops.get_job(rt.engine, j)["status"] in FINAL for j in long), timeout=30)
    assert w.health()[0]
