"""Expanding a burst of job events costs the database a fixed number of statements when no channel matches
(the common case: most jobs notify nobody), and still one delivery per matching channel and event."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mediamill.config import Settings
from mediamill.installkey import SecretBox
from mediamill.notify import channels as ch
from mediamill.notify import dispatcher
from mediamill.notify.events import EXPANDED
from mediamill.store.tables import workflow_notifications as wn

from .support import add_job_event, insert_job, insert_workflow


def _expand(engine: Engine, settings: Settings) -> int:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as conn:
            dispatcher.expand_events(conn, settings, limit=100)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def _events(engine: Engine, n: int) -> list[int]:
    wf = insert_workflow(engine)
    jobs = [insert_job(engine, workflow_id=wf) for _ in range(n)]
    for job in jobs:
        add_job_event(engine, job)
    return jobs


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(wn).order_by(wn.c.id)).mappings()]


def test_unmatched_events_cost_the_same_whatever_their_number(engine: Engine, settings: Settings) -> None:
    _events(engine, 2)
    with_two = _expand(engine, settings)
    _events(engine, 40)
    with_forty = _expand(engine, settings)
    assert with_forty == with_two, (with_two, with_forty)
    rows = _rows(engine)
    assert len(rows) == 42 and all(r["status"] == EXPANDED for r in rows)
    assert all(r["error_message"] == "no matching channel" and r["attempts"] == 0 for r in rows)


def test_each_event_still_reaches_each_matching_channel(engine: Engine, settings: Settings) -> None:
    with engine.begin() as conn:
        ch.create_channel(conn, box=SecretBox.for_settings(settings), tenant_id="default", kind="webhook",
                          config={"url": "http://127.0.0.1:9/hook"}, events=["job.completed"],
                          allowlist=settings.url_allowlist)
    jobs = _events(engine, 5)
    add_job_event(engine, jobs[0], event_type="job.failed")  # no channel for failures
    _expand(engine, settings)
    rows = _rows(engine)
    deliveries = [r for r in rows if r["channel"] is not None]
    assert sorted(r["job_id"] for r in deliveries) == sorted(jobs)
    assert all(r["recipient"] == "http://127.0.0.1:9/hook" and r["subject"] for r in deliveries)
    events = {(r["job_id"], r["event_type"]): r for r in rows if r["channel"] is None}
    assert all(events[(j, "job.completed")]["attempts"] == 1 for j in jobs)
    assert events[(jobs[0], "job.failed")]["error_message"] == "no matching channel"
