"""Chatter of a running job: progress is coalesced (written with the worker's heartbeat at most every
``progress_seconds``, a progress event each 10 %) and, on PostgreSQL, cancellations arrive by NOTIFY instead of
a poll every 0.2 s. The budget of a worker on PostgreSQL, counted statement by statement (benchmarks/chatter.py):
≤ 12 statements and ≤ 3 commits per one-step job, ≤ 0.2 transactions per running step-second."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.runtime import Runtime
from mediamill.store.tables import job_events
from tests.engine.conftest import workflow
from tests.helpers import PG_SKIP_REASON, PG_URL, postgres_database, wait_until


def _count_statements(rt: Runtime, needle: str) -> list[str]:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if needle in statement:
            seen.append(statement)

    sa.event.listen(rt.engine, "before_cursor_execute", on_execute)
    return seen


def test_progress_is_coalesced(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-PROGRESS", [{"name": "nap", "action": "sleep", "params": {"seconds": 8}}])
    updates = _count_statements(rt, "SET progress_percent")
    job = submit("WF-PROGRESS")
    workers({"*": 1})
    wait_until(lambda: ops.get_job(rt.engine, job.id)["status"] == "completed", timeout=60)
    with rt.engine.connect() as conn:
        progress_events = conn.execute(sa.select(job_events.c.data).where(
            job_events.c.job_id == job.id, job_events.c.event_type == "progress")).scalars().all()
    job_updates = [u for u in updates if "UPDATE workflow_jobs" in u]
    # written with the worker's heartbeats, never within progress_seconds / 2 of the last write: at most 4 over an
    # 8 s step even with this test's beat every 0.67 s (was two a second, then one)
    assert rt.settings.progress_seconds == 5
    assert 1 <= len(job_updates) <= 4, len(job_updates)
    assert 1 <= len(progress_events) <= len(job_updates) + 1  # (+1: the step's start writes its 0 % event)
    marks = [e["percent"] for e in progress_events]
    bands = [int(m // 10) for m in marks]
    assert bands == sorted(set(bands)), marks  # one event per 10 % band, not one per write


def test_cancellation_arrives_by_notify_without_polling(pg_rt: Runtime, tmp_path) -> None:
    from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
    from mediamill.engine.worker import Worker

    workflow(pg_rt, "WF-CANCEL", [{"name": "nap", "action": "sleep", "params": {"seconds": 60}}])
    src = tmp_path / "in.txt"
    src.write_text("x")
    job = submit_job(pg_rt.engine, SubmitRequest(job_input=store_input_file(pg_rt.storage, src),
                                                 workflow_code="WF-CANCEL"))
    polls = _count_statements(pg_rt, "cancel_requested IS true")
    w = Worker(pg_rt, pools={"*": 1}).start()
    try:
        wait_until(lambda: job.id in w.running, timeout=30)
        time.sleep(0.5)
        before = len(polls)
        time.sleep(3)
        assert len(polls) - before <= 1, f"{len(polls) - before} cancel polls in 3 s"  # was ~15
        started = time.monotonic()
        assert ops.cancel_job(pg_rt.engine, job.id, by="test") == "cancelling"
        wait_until(lambda: ops.get_job(pg_rt.engine, job.id)["status"] == "cancelled", timeout=10)
        assert time.monotonic() - started < 3
    finally:
        w.stop(grace=1)


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)
def test_chatter_budget_on_postgres(tmp_path) -> None:
    """The worker's statements and transactions, counted in process (every statement, COPY and ping included)
    with the default settings: a one-step job on the normal path is a claim, a start and a finish."""
    from benchmarks.chatter import measure

    with postgres_database("mm_chatter") as url:
        figures = measure(url, tmp_path / "data", jobs=6, step_seconds=10, idle_seconds=12)
    per_job, running, idle = figures["per_job"], figures["per_step_second"], figures["idle_per_second"]
    assert per_job["statements"] <= 12, figures  # was ~22 (with pings and COPY counted)
    assert per_job["commits"] <= 3, figures  # was ~4.1
    # (+ now and then a read-only look at the breakers, when their cache is over 0.5 s old)
    assert per_job["transactions"] <= 3.5, figures  # was ~4.4
    assert running["transactions"] <= 0.2, figures  # was ~2.5: one beat per progress_seconds for both steps
    assert idle["transactions"] <= 0.25, figures  # was ~4: one beat per heartbeat, a safety claim per lease
    assert figures["connections_2_slots"] <= 4, figures
