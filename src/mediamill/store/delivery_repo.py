"""What the ``deliver`` step reads and records: a job's deliver override and shadow link, its
outputs, and where each output was delivered (``job_outputs.delivered_url``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import job_outputs, workflow_jobs
from mediamill.store.timeutil import utcnow


def deliver_override(conn: Connection, job_id: int) -> tuple[dict[str, Any] | None, int | None]:
    """The job's own ``deliver`` override (None: the workflow's applies) and the primary job it
    shadows (None: not a shadow run)."""
    override, shadow_of = conn.execute(sa.select(workflow_jobs.c.deliver, workflow_jobs.c.shadow_of)
                                       .where(workflow_jobs.c.id == job_id)).one()
    return override, shadow_of


def job_outputs_of(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    """Every ``job_outputs`` row of the job, in the order they were recorded."""
    return [dict(r) for r in conn.execute(sa.select(job_outputs).where(job_outputs.c.job_id == job_id)
                                          .order_by(job_outputs.c.id)).mappings()]


def mark_delivered(conn: Connection, output_id: int, url: str) -> None:
    """Record that an output now lives at ``url`` too (a retry of the step skips it)."""
    conn.execute(job_outputs.update().where(job_outputs.c.id == output_id)
                 .values(delivered_url=url, delivered_at=utcnow()))
