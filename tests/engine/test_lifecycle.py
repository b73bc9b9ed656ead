"""Job life cycle through real workers: steps in order, checkpoints, retries, DLQ, cancel, priority."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmittedJob
from mediamill.runtime import Runtime
from mediamill.store.tables import workflow_notifications
from tests.engine.conftest import workflow
from tests.helpers import apply_workflow, wait_until

FINAL = ("completed", "partial", "failed", "cancelled")


def _done(rt: Runtime, job_id: int, timeout: float = 30) -> dict:
    return wait_until(lambda: (d := ops.get_job(rt.engine, job_id))["status"] in FINAL and d, timeout=timeout,
                      message=f"job {job_id} finished")


def test_steps_run_in_order_with_outbox_and_events(rt: Runtime, submit: Callable[..., SubmittedJob], workers) -> None:
    workflow(rt, "WF-ORDER", [{"name": "a", "action": "noop"}, {"name": "b", "action": "sleep",
                                                                 "params": {"seconds": 0.1}},
                              {"name": "c", "action": "noop"}])
    job = submit("WF-ORDER")
    workers({"q": 1})
    d = _done(rt, job.id)
    assert d["status"] == "completed" and float(d["progress_percent"]) == 100
    assert [(s["step_name"], s["status"]) for s in d["steps"]] == [("a", "completed"), ("b", "completed"),
                                                                   ("c", "completed")]
    statuses = [e["data"]["status"] for e in d["events"] if e["event_type"] == "status"]
    assert statuses == ["queued", "processing", "completed"]
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(workflow_notifications).where(workflow_notifications.c.job_id == job.id)
                            ).mappings().all()
    assert [(r["event_type"], r["status"]) for r in rows] == [("job.completed", "pending")]


def test_transient_failure_retries_with_growing_jittered_delays(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-FLAKY", [{"name": "prep", "action": "sleep", "params": {"seconds": 0}},
                              {"name": "flaky", "action": "fail", "on_failure": "retry",
                               "params": {"error_class": "transient", "times": 2}}], retry_count=3)
    job = submit("WF-FLAKY", priority=7)
    workers({"q": 1})
    d = _done(rt, job.id)
    assert d["status"] == "completed"
    flaky = [s for s in d["steps"] if s["step_name"] == "flaky"]
    assert [(s["status"], s["retry_attempt"]) for s in flaky] == [("failed", 0), ("failed", 1), ("completed", 2)]
    assert [s["status"] for s in d["steps"] if s["step_name"] == "prep"] == ["completed"]  # checkpoint kept
    retries = [e["data"] for e in d["events"] if e["event_type"] == "retry"]
    ceilings = [r["ceiling_seconds"] for r in retries]
    delays = [r["delay_seconds"] for r in retries]
    assert ceilings == [0.05, 0.1]  # exponential: base · 2^attempt
    assert all(0 <= dl <= c for dl, c in zip(delays, ceilings, strict=True))
    assert delays != ceilings  # full jitter: drawn from [0, ceiling]
    with rt.engine.connect() as conn:  # a retry keeps its priority
        assert conn.execute(sa.text("SELECT priority FROM workflow_jobs WHERE id = :i"), {"i": job.id}).scalar() == 7


def test_invalid_input_dead_letters_at_once_and_dlq_retry_on_fixed_version(rt: Runtime, submit, workers) -> None:
    bad = [{"name": "check", "action": "fail", "on_failure": "retry",
            "params": {"error_class": "invalid_input", "message": "corrupt header"}},
           {"name": "after", "action": "noop"}]
    workflow(rt, "WF-BAD", bad, retry_count=5)
    job = submit("WF-BAD")
    workers({"q": 1})
    d = _done(rt, job.id)
    assert d["status"] == "failed" and d["error_class"] == "invalid_input"
    assert [(s["step_name"], s["status"]) for s in d["steps"]] == [("check", "failed")]  # never retried
    dl = ops.list_dead_letters(rt.engine)
    assert len(dl) == 1 and dl[0]["job_id"] == job.id and dl[0]["failed_step"] == "check"
    assert dl[0]["attempts"][0]["error_class"] == "invalid_input"
    assert rt.storage.exists(d["input_key"])  # the input is preserved
    fixed = apply_workflow(rt, {"code": "WF-BAD", "name": "fixed", "type": "generic", "queue": "q",
                                "steps": [{"name": "after", "action": "noop"}]})
    ops.retry_dead_letter(rt.engine, dl[0]["id"], version=fixed.version, by="test")
    d = _done(rt, job.id)
    assert d["status"] == "completed" and d["workflow_version"] == fixed.version
    assert ops.list_dead_letters(rt.engine) == []
    assert ops.list_dead_letters(rt.engine, include_resolved=True)[0]["resolution"] == "retried"


def test_dlq_retry_resumes_at_failed_step(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-RESUME", [{"name": "one", "action": "sleep", "params": {"seconds": 0}},
                               {"name": "two", "action": "fail", "params": {"error_class": "unavailable",
                                                                            "times": 1}}])
    job = submit("WF-RESUME")
    workers({"q": 1})
    assert _done(rt, job.id)["status"] == "failed"
    dl = ops.list_dead_letters(rt.engine)[0]
    ops.retry_dead_letter(rt.engine, dl["id"])
    d = _done(rt, job.id)
    assert d["status"] == "completed"
    assert [(s["step_name"], s["status"]) for s in d["steps"]] == [("one", "completed"), ("two", "failed"),
                                                                   ("two", "completed")]


def test_continue_makes_partial(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-PART", [{"name": "x", "action": "fail", "on_failure": "continue",
                              "params": {"error_class": "unavailable"}}, {"name": "y", "action": "noop"}])
    job = submit("WF-PART")
    workers({"q": 1})
    d = _done(rt, job.id)
    assert d["status"] == "partial" and [s["status"] for s in d["steps"]] == ["failed", "completed"]


def test_when_conditions_skip_and_are_logged(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-WHEN", [{"name": "always", "action": "noop"},
                             {"name": "urgent only", "action": "noop", "when": "job.priority > 8"},
                             {"name": "after", "action": "noop", "when": "steps['always'].status == 'completed'"}])
    job = submit("WF-WHEN", priority=3)
    workers({"q": 1})
    d = _done(rt, job.id)
    assert [(s["step_name"], s["status"]) for s in d["steps"]] == [("always", "completed"),
                                                                   ("urgent only", "skipped"),
                                                                   ("after", "completed")]


def test_needs_run_concurrently(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-DAG", [{"name": "a", "action": "sleep", "params": {"seconds": 0.6}, "needs": []},
                            {"name": "b", "action": "sleep", "params": {"seconds": 0.6}, "needs": []},
                            {"name": "c", "action": "noop", "needs": ["a", "b"]}])
    job = submit("WF-DAG")
    # the branches run in the worker's step children, one a slot: with one slot they would take turns (a step's
    # start is recorded when its child starts it, not when it begins waiting for a child)
    workers({"q": 2})
    d = _done(rt, job.id)
    a, b = (next(s for s in d["steps"] if s["step_name"] == n) for n in "ab")
    assert d["status"] == "completed"
    assert a["started_at"] < b["completed_at"] and b["started_at"] < a["completed_at"]  # overlapped


def test_cancel_kills_running_step_within_a_second(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-LONG", [{"name": "nap", "action": "sleep", "params": {"seconds": 60}}])
    job = submit("WF-LONG")
    workers({"q": 1})
    wait_until(lambda: any(s["status"] == "running" for s in ops.get_job(rt.engine, job.id)["steps"]))
    t0 = time.monotonic()
    assert ops.cancel_job(rt.engine, job.id, by="test") == "cancelling"
    d = wait_until(lambda: (x := ops.get_job(rt.engine, job.id))["status"] == "cancelled" and x, timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert [s["status"] for s in d["steps"]] == ["cancelled"]


def test_cancel_queued_job(rt: Runtime, submit) -> None:
    workflow(rt, "WF-Q", [{"name": "a", "action": "noop"}])
    job = submit("WF-Q")
    assert ops.cancel_job(rt.engine, job.id) == "cancelled"
    assert ops.get_job(rt.engine, job.id)["status"] == "cancelled"
    assert ops.queue_stats(rt.engine)[0]["depth"] == 0


def test_priority_order_with_one_slot(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-P", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.02}}], queue="p")
    ops.pause_queue(rt.engine, "p")
    prios = [3, 9, 1, 7, 5, 8, 2]
    jobs = {submit("WF-P", priority=p).id: p for p in prios}
    workers({"p": 1})
    time.sleep(0.3)  # the paused queue must not be claimed
    assert all(ops.get_job(rt.engine, j)["status"] == "queued" for j in jobs)
    ops.resume_queue(rt.engine, "p")
    for j in jobs:
        _done(rt, j)
    order = sorted(jobs, key=lambda j: ops.get_job(rt.engine, j)["started_at"])
    assert [jobs[j] for j in order] == sorted(prios, reverse=True)


def test_aging_lets_low_priority_run_within_bound(backend_url: str, tmp_path, input_file) -> None:
    from tests.engine.conftest import FAST
    from tests.helpers import make_runtime

    rt = make_runtime(tmp_path / "data2", backend_url, **{**FAST, "aging_seconds": 0.25})
    try:
        from mediamill.engine.submit import SubmitRequest, store_input_file, submit_many
        from mediamill.engine.worker import Worker

        workflow(rt, "WF-AGE", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.1}}], queue="age")
        ops.pause_queue(rt.engine, "age")
        inp = store_input_file(rt.storage, input_file)
        low = submit_many(rt.engine, [SubmitRequest(job_input=inp, workflow_code="WF-AGE", priority=0)])[0]
        highs = submit_many(rt.engine, [SubmitRequest(job_input=inp, workflow_code="WF-AGE", priority=3)
                                        for _ in range(60)])
        ops.resume_queue(rt.engine, "age")
        w = Worker(rt, pools={"age": 1}).start()
        try:
            _done(rt, low.id, timeout=30)
            started = ops.get_job(rt.engine, low.id)["started_at"]
            later = [h for h in highs if (ops.get_job(rt.engine, h.id)["started_at"] or "9") > started]
            # 60 × 0.1 s of higher-priority work: without ageing the low job would run last; with one point
            # per 0.25 s up to 10, it runs once every waiting job reached the cap (it is the oldest)
            assert len(later) >= 20
        finally:
            w.stop(grace=1)
    finally:
        rt.close()
