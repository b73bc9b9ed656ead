"""A job's row as the engine works with it: the ``workflow_jobs`` columns a claimed job carries,
a job found by its code, and a job put (back) in its queue.

``CLAIM_FIELDS`` is the job dict every engine path hands around (claim, cancel, reprocess,
review, rescue): reading it from one list keeps those dicts alike.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import media_queue as mq
from mediamill.store.tables import workflow_jobs as wj

#: The columns of a job dict (what a claim reads; ``store/lifecycle.py`` reads it).
CLAIM_FIELDS = (wj.c.id, wj.c.job_code, wj.c.workflow_id, wj.c.workflow_version, wj.c.tenant_id, wj.c.priority,
                wj.c.input_key, wj.c.input_url, wj.c.input_mime, wj.c.input_filename, wj.c.input_size,
                wj.c.params, wj.c.job_metadata, wj.c.input_metadata, wj.c.started_at, wj.c.retry_count,
                wj.c.rescue_count, wj.c.run_number, wj.c.cancel_requested, wj.c.request_id, wj.c.submitted_by,
                wj.c.submitted_at, wj.c.notify, wj.c.queue_name, wj.c.rerun, wj.c.shadow_of)


def job_id_by_code(conn: Connection, job_code: str) -> int | None:
    """The id of the job with this code (codes are stored upper-case: ``JOB-…``), or None."""
    found = conn.execute(sa.select(wj.c.id).where(wj.c.job_code == job_code.upper())).scalar()
    return None if found is None else int(found)


def enqueue(conn: Connection, job_id: int, *, queue: str, priority: int, now: datetime) -> None:
    """A fresh ``media_queue`` entry for the job: queued, due ``now``, no attempts yet, at ``priority``
    (its base priority too)."""
    conn.execute(mq.insert().values(job_id=job_id, queue_name=queue, priority=priority, base_priority=priority,
                                    scheduled_time=now, status="queued", created_at=now, attempts=0))


def cancel_requested(conn: Connection, job_ids: list[int]) -> list[int]:
    """Those of ``job_ids`` whose cancellation was asked for (the worker's canceller: its running jobs)."""
    return [int(i) for i in conn.execute(sa.select(wj.c.id).where(wj.c.id.in_(job_ids),
                                                                   wj.c.cancel_requested.is_(True))).scalars()]
