"""A unit's completion and a skipped step's record wait for the job's next transaction (``JobRunner._defer``):
the next unit's start, the finish, a requeue. Every path that ends a run writes them (or, when the claim is
gone, drops them with their stored outputs), and a completion keeps its own time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.actions import base
from mediamill.actions.base import OutputFile, StepContext, StepResult, action
from mediamill.engine import housekeeping
from mediamill.engine import operations as ops
from mediamill.engine.outcomes import Hold
from mediamill.engine.runner import JobRunner
from mediamill.engine.submit import SubmittedJob
from mediamill.runtime import Runtime
from mediamill.store.tables import job_events, job_outputs, media_queue, step_executions, workflow_jobs
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import workflow
from tests.helpers import wait_until

QUICK = {"action": "sleep", "params": {"seconds": 0}}  # a step in a child: the normal runner


def write_note(ctx: StepContext) -> StepResult:
    """Write a small text file (a step with an output, run in the worker's process)."""
    path = ctx.work_dir / "note.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"attempt {ctx.attempt}\n")
    return StepResult(outputs=[OutputFile("note.txt", path, "text/plain")], data={"wrote": True})


@pytest.fixture
def note_action() -> Iterator[str]:
    """``test_write_note``, registered for the test only (other tests list every registered action)."""
    action("test_write_note", family="test", isolated=False, reads_input=False)(write_note)
    yield "test_write_note"
    base._ACTIONS.pop("test_write_note", None)


def _executions(rt: Runtime, job_id: int) -> list[tuple[str, str, datetime | None, datetime | None]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(step_executions.c.step_name, step_executions.c.status,
                                      step_executions.c.started_at, step_executions.c.completed_at)
                            .where(step_executions.c.job_id == job_id).order_by(step_executions.c.id)).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _final(rt: Runtime, job_id: int) -> dict[str, Any]:
    return wait_until(lambda: (d := ops.get_job(rt.engine, job_id))["status"] in ("completed", "partial", "failed",
                                                                                  "cancelled") and d,
                      timeout=30, message=f"job {job_id} finished")


@pytest.fixture
def job_commits(rt: Runtime) -> Iterator[list[str]]:
    """The names of the job threads' committed transactions (the runner's writes), in order."""
    seen: list[str] = []

    def on_commit(_conn: Any) -> None:
        name = threading.current_thread().name
        if name.startswith("mm-job"):
            seen.append(name)

    sa.event.listen(rt.engine, "commit", on_commit)
    yield seen
    sa.event.remove(rt.engine, "commit", on_commit)


def _after_unit(monkeypatch: pytest.MonkeyPatch, step: int, then: Callable[[JobRunner], None]) -> None:
    """Call ``then(runner)`` once, right after the unit starting at ``step`` completed (before any later write)."""
    original = JobRunner._complete
    done: list[int] = []

    def complete(self: JobRunner, group: list[int], *args: Any, **kwargs: Any) -> Any:
        outcome = original(self, group, *args, **kwargs)
        if group[0] == step and not done:
            done.append(1)
            then(self)
        return outcome

    monkeypatch.setattr(JobRunner, "_complete", complete)


def test_a_completion_and_a_skip_go_with_the_next_transaction_and_keep_their_own_time(
        rt: Runtime, submit: Callable[..., SubmittedJob], workers, job_commits: list[str]) -> None:
    workflow(rt, "WF-DEFER", [{"name": "a", **QUICK}, {"name": "b", **QUICK, "when": "input.size > 10000000"},
                              {"name": "c", **QUICK}, {"name": "d", **QUICK}])
    job = submit("WF-DEFER")
    workers({"q": 1})
    assert _final(rt, job.id)["status"] == "completed"
    execs = _executions(rt, job.id)
    assert [(e[0], e[1]) for e in execs] == [("a", "completed"), ("b", "skipped"), ("c", "completed"),
                                             ("d", "completed")]
    # three starts (a's marks the job processing; c's carries a's completion and b's skip, d's c's completion)
    # and the finish (with d's completion): four transactions, where each completion and skip had its own
    assert len(job_commits) == 4, job_commits
    (_, _, a_start, a_end), (_, _, b_start, _), (_, _, c_start, c_end), (_, _, d_start, _) = execs
    assert a_start is not None and a_end is not None and b_start is not None and c_start is not None
    assert c_end is not None and d_start is not None
    assert a_start <= a_end <= b_start <= c_start  # written later, stamped when each happened
    assert c_end <= d_start


def test_a_lost_claim_drops_the_waiting_completion_and_its_stored_output(
        rt: Runtime, submit: Callable[..., SubmittedJob], workers, monkeypatch: pytest.MonkeyPatch,
        note_action: str) -> None:
    workflow(rt, "WF-DEFER-LOST", [{"name": "note", "action": note_action}, {"name": "wait", **QUICK}])
    job = submit("WF-DEFER-LOST")
    first: list[str] = []

    def rescued(runner: JobRunner) -> None:  # the worker is cut off right after the note was stored
        first.append(runner.states[0].outputs[0]["key"])
        assert rt.storage.exists(first[0])
        with rt.engine.begin() as conn:
            conn.execute(media_queue.update().where(media_queue.c.job_id == job.id)
                         .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        assert housekeeping.rescue_orphaned_jobs(rt.engine, max_rescues=5) == 1

    _after_unit(monkeypatch, 0, rescued)
    workers({"q": 1})
    assert _final(rt, job.id)["status"] == "completed"  # its second attempt ran it through
    assert not rt.storage.exists(first[0])  # the first attempt's note was never recorded: it is gone
    with rt.engine.connect() as conn:
        keys = list(conn.execute(sa.select(job_outputs.c.storage_key).where(job_outputs.c.job_id == job.id))
                    .scalars())
    assert len(keys) == 1 and keys != first  # the second attempt's note
    assert [(e[0], e[1]) for e in _executions(rt, job.id)] == [("note", "interrupted"), ("note", "completed"),
                                                               ("wait", "completed")]


def test_a_cancel_between_units_still_records_the_completed_one(
        rt: Runtime, submit: Callable[..., SubmittedJob], workers, monkeypatch: pytest.MonkeyPatch,
        note_action: str) -> None:
    workflow(rt, "WF-DEFER-CANCEL", [{"name": "note", "action": note_action}, {"name": "wait", **QUICK}])
    job = submit("WF-DEFER-CANCEL")
    _after_unit(monkeypatch, 0, lambda runner: runner.cancel.set())
    workers({"q": 1})
    assert _final(rt, job.id)["status"] == "cancelled"
    assert [(e[0], e[1]) for e in _executions(rt, job.id)] == [("note", "completed")]
    with rt.engine.connect() as conn:
        key = conn.execute(sa.select(job_outputs.c.storage_key).where(job_outputs.c.job_id == job.id)).scalar_one()
    assert rt.storage.exists(key)


def test_a_hand_back_between_units_keeps_the_completed_one_done(
        rt: Runtime, submit: Callable[..., SubmittedJob], workers, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow(rt, "WF-DEFER-BACK", [{"name": "a", **QUICK}, {"name": "b", **QUICK}])
    job = submit("WF-DEFER-BACK")
    _after_unit(monkeypatch, 0, lambda runner: runner.hand_back())
    workers({"q": 1})
    assert _final(rt, job.id)["status"] == "completed"
    # a ran once: its completion went back to the queue with the job, and the next run started at b
    assert [(e[0], e[1]) for e in _executions(rt, job.id)] == [("a", "completed"), ("b", "completed")]


def test_a_probe_of_the_input_is_stored_with_the_first_start(
        rt: Runtime, submit: Callable[..., SubmittedJob], workers, job_commits: list[str]) -> None:
    # `input.format` only a probe can tell: it runs in a child before the first unit, and what it found is
    # written with that unit's start (one transaction less), then seen by the condition
    workflow(rt, "WF-DEFER-PROBE", [{"name": "a", **QUICK, "when": "input.format != 'no such format'"},
                                    {"name": "b", **QUICK}])
    job = submit("WF-DEFER-PROBE")
    workers({"q": 1})
    d = _final(rt, job.id)
    assert d["status"] == "completed"
    assert d["input_metadata"] is not None and d["input_metadata"]["mime"] == "text/plain"
    assert [(s["step_name"], s["status"]) for s in d["steps"]] == [("a", "completed"), ("b", "completed")]
    assert len(job_commits) == 3, job_commits  # a's start (with the probe; a decision event), b's start, the finish


def _trail(rt: Runtime, job_id: int) -> list[tuple[str, str | None, str | None]]:
    """The job's events in order: (type, step, status or reason)."""
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(job_events.c.event_type, job_events.c.step_name, job_events.c.data)
                            .where(job_events.c.job_id == job_id).order_by(job_events.c.id)).all()
    return [(r[0], r[1], (r[2] or {}).get("status") or (r[2] or {}).get("reason")) for r in rows]


def test_a_hold_after_a_unit_carries_its_completion_before_the_requeue(
        rt: Runtime, submit: Callable[..., SubmittedJob], workers, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow(rt, "WF-DEFER-HOLD", [{"name": "a", **QUICK}, {"name": "b", **QUICK}])
    job = submit("WF-DEFER-HOLD")
    original = JobRunner._gates

    def gates(self: JobRunner, runnable: list[int]) -> Any:  # b's breaker is open: the job waits a minute
        return Hold(60, "sleep", "b") if runnable == [1] else original(self, runnable)

    monkeypatch.setattr(JobRunner, "_gates", gates)
    workers({"q": 1})
    wait_until(lambda: ("wait", None, "breaker open") in _trail(rt, job.id), timeout=30, message="the hold")
    assert [(e[0], e[1]) for e in _executions(rt, job.id)] == [("a", "completed")]
    trail = _trail(rt, job.id)
    assert trail.index(("step", "a", "completed")) < trail.index(("wait", None, "breaker open")) \
        < trail.index(("status", None, "queued"), 1)  # a's completion, then the hold, then queued again
    with rt.engine.connect() as conn:
        status, progress = conn.execute(sa.select(workflow_jobs.c.status, workflow_jobs.c.progress_percent)
                                        .where(workflow_jobs.c.id == job.id)).one()
    assert status == "queued" and progress == 50  # a's share of the job, written with its completion


def test_a_skipped_first_step_comes_after_the_job_is_marked_processing(
        rt: Runtime, submit: Callable[..., SubmittedJob], workers) -> None:
    workflow(rt, "WF-DEFER-SKIP", [{"name": "a", **QUICK, "when": "input.size > 10000000"}, {"name": "b", **QUICK}])
    job = submit("WF-DEFER-SKIP")
    workers({"q": 1})
    assert _final(rt, job.id)["status"] == "completed"
    trail = [e for e in _trail(rt, job.id) if e[0] in ("status", "decision")]
    assert trail == [("status", None, "queued"), ("status", None, "processing"), ("decision", "a", None),
                     ("status", None, "completed")]


def test_units_of_a_needs_workflow_write_at_once_from_their_threads(
        rt: Runtime, submit: Callable[..., SubmittedJob], workers) -> None:
    siblings = [{"name": n, **QUICK, "needs": ["root"]} for n in ("b", "c", "d", "e")]
    workflow(rt, "WF-DEFER-DAG", [{"name": "root", **QUICK}, *siblings])
    job = submit("WF-DEFER-DAG")
    workers({"q": 1})
    assert _final(rt, job.id)["status"] == "completed"
    assert sorted((e[0], e[1]) for e in _executions(rt, job.id)) == \
        sorted((n, "completed") for n in ("root", "b", "c", "d", "e"))
    done = [e for e in _trail(rt, job.id) if e[0] == "step" and e[2] == "completed"]
    assert sorted(e[1] for e in done if e[1]) == ["b", "c", "d", "e", "root"]  # each once
