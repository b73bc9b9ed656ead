"""The rows a reprocess reads and writes: a finished job, its steps' last outcomes, the jobs a bulk
reprocess takes, and the job put back in its queue as a new run.

Which steps run again, and whether a job may be reprocessed at all, is decided in
``engine/reprocess.py``; this module only reads and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.job_rows import CLAIM_FIELDS, enqueue
from mediamill.store.tables import dead_letters, job_outputs, media_queue, step_executions, workflow_definitions
from mediamill.store.tables import workflow_jobs as wj


def job_with_status(conn: Connection, job_id: int, tenant_id: str | None) -> dict[str, Any] | None:
    """The job dict (``CLAIM_FIELDS``) with its ``status``, in the tenant unless ``tenant_id`` is
    None; None when there is no such job."""
    q = sa.select(*CLAIM_FIELDS, wj.c.status).where(wj.c.id == job_id)
    if tenant_id is not None:
        q = q.where(wj.c.tenant_id == tenant_id)
    job = conn.execute(q).mappings().first()
    return None if job is None else dict(job)


def last_step_statuses(conn: Connection, job_id: int) -> dict[str, str]:
    """The outcome of each step's latest execution, by step name."""
    rows = conn.execute(sa.select(step_executions.c.step_name, step_executions.c.status)
                        .where(step_executions.c.job_id == job_id).order_by(step_executions.c.id)).all()
    return {name: status for name, status in rows if name}


def requeue_run(conn: Connection, job: dict[str, Any], *, from_statuses: Sequence[str], run: int, version: int,
                queue: str, steps: list[str], mode: str, by: str | None, now: datetime) -> bool:
    """Put a finished job back in ``queue`` as run ``run`` of ``version`` re-running ``steps``.

    Only while the job is still in one of ``from_statuses``: False (and nothing written) when it
    changed meanwhile. Otherwise the re-run steps' earlier outputs are dropped, the job gets a
    fresh queue entry and its open dead letters are resolved as retried.
    """
    res = conn.execute(wj.update().where(wj.c.id == job["id"], wj.c.status.in_(from_statuses)).values(
        status="queued", error_message=None, error_class=None, completed_at=None, finished_at=None,
        cancel_requested=False,
        retry_count=0, rescue_count=0, run_number=run, workflow_version=version, queue_name=queue,
        current_step=0, rerun={"run": run, "steps": steps, "mode": mode}, updated_at=now))
    if res.rowcount != 1:
        return False
    # what the re-run steps made before is replaced by what they make now
    conn.execute(job_outputs.delete().where(job_outputs.c.job_id == job["id"],
                                            job_outputs.c.step_name.in_(steps)))
    conn.execute(media_queue.delete().where(media_queue.c.job_id == job["id"]))
    enqueue(conn, job["id"], queue=queue, priority=job["priority"], now=now)
    conn.execute(dead_letters.update().where(dead_letters.c.job_id == job["id"], dead_letters.c.resolved_at.is_(None))
                 .values(resolved_at=now, resolution="retried", resolved_by=by))
    return True


def reprocessable_job_ids(conn: Connection, *, statuses: Sequence[str], tenant_id: str | None,
                          workflow: str | None, since: datetime | None, step: str | None,
                          step_statuses: Sequence[str] | None, limit: int) -> list[int]:
    """Ids of jobs in ``statuses`` (shadow runs left out), oldest first, at most ``limit``.

    Narrowed to a tenant, a workflow code, jobs submitted at or after ``since``, and jobs where
    ``step`` ran — and ended in one of ``step_statuses`` when given — for each filter that is set.
    """
    q = (sa.select(wj.c.id).select_from(wj.join(workflow_definitions, workflow_definitions.c.id == wj.c.workflow_id))
         .where(wj.c.status.in_(statuses), wj.c.shadow_of.is_(None)))
    if tenant_id is not None:
        q = q.where(wj.c.tenant_id == tenant_id)
    if workflow:
        q = q.where(workflow_definitions.c.workflow_code == workflow)
    if since:
        q = q.where(wj.c.submitted_at >= since)
    if step:
        cond = [step_executions.c.job_id == wj.c.id, step_executions.c.step_name == step]
        if step_statuses:
            cond.append(step_executions.c.status.in_(step_statuses))
        q = q.where(sa.exists().where(*cond))
    return list(conn.execute(q.order_by(wj.c.id).limit(limit)).scalars())
