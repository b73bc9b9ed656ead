"""Chatter of a running job: progress is coalesced (at most one write a second, a progress event each 10 %) and,
on PostgreSQL, cancellations arrive by NOTIFY instead of a poll every 0.2 s."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.runtime import Runtime
from mediamill.store.tables import job_events
from tests.engine.conftest import workflow
from tests.helpers import wait_until


def _count_statements(rt: Runtime, needle: str) -> list[str]:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if needle in statement:
            seen.append(statement)

    sa.event.listen(rt.engine, "before_cursor_execute", on_execute)
    return seen


def test_progress_is_coalesced(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-PROGRESS", [{"name": "nap", "action": "sleep", "params": {"seconds": 5}}])
    updates = _count_statements(rt, "SET progress_percent")
    job = submit("WF-PROGRESS")
    workers({"*": 1})
    wait_until(lambda: ops.get_job(rt.engine, job.id)["status"] == "completed", timeout=60)
    with rt.engine.connect() as conn:
        progress_events = conn.execute(sa.select(job_events.c.data).where(
            job_events.c.job_id == job.id, job_events.c.event_type == "progress")).scalars().all()
    job_updates = [u for u in updates if "UPDATE workflow_jobs" in u]
    assert 2 <= len(job_updates) <= 7, len(job_updates)  # about one a second over 5 s (was two a second)
    assert 1 <= len(progress_events) <= len(job_updates)
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
