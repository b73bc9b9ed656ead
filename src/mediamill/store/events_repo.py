"""Reads of the progress stream: the ``job_events`` rows after an id (an index range on the primary key;
of one job, of a tenant, or all), the newest id, and a job's status (has it finished?).

How the rows become Server-Sent Events, and who receives them, is ``api/events.py``'s business; this
module only reads, on the caller's connection.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import job_events, workflow_jobs


def after(conn: Connection, after_id: int, *, job_id: int | None = None, tenant_id: str | None = None,
          limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` event rows after ``after_id`` (of one job, of a tenant, or all), oldest first."""
    q = sa.select(job_events).where(job_events.c.id > after_id).order_by(job_events.c.id).limit(limit)
    if job_id is not None:
        q = q.where(job_events.c.job_id == job_id)
    if tenant_id is not None:
        q = q.where(job_events.c.tenant_id == tenant_id)
    return [dict(r) for r in conn.execute(q).mappings()]


def last_id(conn: Connection) -> int:
    """The newest event's id (0: none yet)."""
    return int(conn.execute(sa.select(sa.func.max(job_events.c.id))).scalar() or 0)


def job_status(conn: Connection, job_id: int) -> str | None:
    """The job's status (None: no such job)."""
    status = conn.execute(sa.select(workflow_jobs.c.status).where(workflow_jobs.c.id == job_id)).scalar()
    return None if status is None else str(status)
