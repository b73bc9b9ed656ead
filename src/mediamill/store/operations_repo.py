"""What operators' actions and reads need of the database (the CLI, the API and the dashboard share them):
a job's row and queue entry, its cancellation and priority, a finished job put back in its queue, the
dead letters (one, the open ones, a page of them, and their resolution), the queues (paused or not, their
figures), the workers and their running jobs, and a job's detail and the job listing.

What may be cancelled, retried or paused, by whom, and how the rows are shown, is decided in
``engine/operations.py``; this module only reads and writes, on the caller's connection or in its
transaction. Reads scoped to a tenant go through ``store.queue_scope``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.job_rows import CLAIM_FIELDS
from mediamill.store.queue_scope import scoped_jobs
from mediamill.store.tables import (
    dead_letters,
    job_events,
    job_outputs,
    media_queue,
    queues,
    step_executions,
    workers,
    workflow_definitions,
    workflow_jobs,
)
from mediamill.store.timeutil import utcnow

wj, mq, dl, wd = workflow_jobs, media_queue, dead_letters, workflow_definitions

#: The statuses a finished job may be retried from.
RETRYABLE = ("failed", "partial", "cancelled")


# ----------------------------------------------------------------------------- a job
def job_row(conn: Connection, job_id: int, tenant_id: str | None) -> dict[str, Any] | None:
    """The job dict (``CLAIM_FIELDS``) with its status and cancel flag; of ``tenant_id`` when given. None when
    there is no such job."""
    q = sa.select(*CLAIM_FIELDS, wj.c.status, wj.c.cancel_requested).where(wj.c.id == job_id)
    if tenant_id is not None:
        q = q.where(wj.c.tenant_id == tenant_id)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def queue_status(conn: Connection, job_id: int) -> str | None:
    """The status of the job's queue entry (``processing``: a worker holds it), None without one."""
    status = conn.execute(sa.select(mq.c.status).where(mq.c.job_id == job_id)).scalar()
    return None if status is None else str(status)


def request_cancel(conn: Connection, job_id: int) -> None:
    """Flag a running job for cancellation (its worker kills the step child)."""
    conn.execute(wj.update().where(wj.c.id == job_id).values(cancel_requested=True, updated_at=utcnow()))


def cancel_waiting(conn: Connection, job_id: int) -> bool:
    """Take a waiting job out of its queue and flag it cancelled, guarded on its still waiting (queued or
    pending). False when it changed state meanwhile (its queue entry is gone all the same)."""
    conn.execute(mq.delete().where(mq.c.job_id == job_id, mq.c.status == "queued"))
    res = conn.execute(wj.update().where(wj.c.id == job_id, wj.c.status.in_(("queued", "pending")))
                       .values(cancel_requested=True))
    return res.rowcount == 1


def set_priority(conn: Connection, job_id: int, priority: int) -> None:
    """Set a job's priority, and its queue entry's (its base priority too, the ageing started over)."""
    conn.execute(wj.update().where(wj.c.id == job_id).values(priority=priority, updated_at=utcnow()))
    conn.execute(mq.update().where(mq.c.job_id == job_id)
                 .values(priority=priority, base_priority=priority, aged_at=None))


def reopen_finished(conn: Connection, job_id: int, values: dict[str, Any]) -> bool:
    """Write ``values`` (a new run) to a job that is finished and may be retried (``RETRYABLE``). False when it
    is not."""
    res = conn.execute(wj.update().where(wj.c.id == job_id, wj.c.status.in_(RETRYABLE)).values(**values))
    return res.rowcount == 1


def drop_queue_entries(conn: Connection, job_id: int) -> None:
    """Delete the job's queue entries, whatever their status."""
    conn.execute(mq.delete().where(mq.c.job_id == job_id))


def drop_outputs(conn: Connection, job_id: int) -> None:
    """Delete the job's ``job_outputs`` rows."""
    conn.execute(job_outputs.delete().where(job_outputs.c.job_id == job_id))


# ----------------------------------------------------------------------------- dead letters
def dead_letter(conn: Connection, dl_id: int, tenant_id: str | None) -> dict[str, Any] | None:
    """One dead letter's row (of ``tenant_id`` when given), None when there is none."""
    q = sa.select(dl).where(dl.c.id == dl_id)
    if tenant_id is not None:
        q = q.where(dl.c.tenant_id == tenant_id)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def resolve_open_of_job(conn: Connection, job_id: int, *, resolution: str, by: str | None) -> None:
    """Resolve the job's open dead letters (``resolution``, by whom, now)."""
    conn.execute(dl.update().where(dl.c.job_id == job_id, dl.c.resolved_at.is_(None))
                 .values(resolved_at=utcnow(), resolution=resolution, resolved_by=by))


def resolve_open(conn: Connection, dl_id: int, *, resolution: str, by: str | None) -> None:
    """Resolve one dead letter if it is still open."""
    conn.execute(dl.update().where(dl.c.id == dl_id, dl.c.resolved_at.is_(None))
                 .values(resolved_at=utcnow(), resolution=resolution, resolved_by=by))


def resolve(conn: Connection, dl_id: int, *, resolution: str, by: str | None) -> None:
    """Resolve one dead letter (the caller saw it open in this transaction)."""
    conn.execute(dl.update().where(dl.c.id == dl_id).values(resolved_at=utcnow(), resolution=resolution,
                                                            resolved_by=by))


def _dl_filter(q: Any, *, tenant_id: str | None, error_class: str | None, workflow: str | None) -> Any:
    if tenant_id is not None:
        q = q.where(dl.c.tenant_id == tenant_id)
    if error_class:
        q = q.where(dl.c.error_class == error_class)
    if workflow:
        q = q.where(dl.c.workflow_code == workflow)
    return q


def open_dead_letter_ids(conn: Connection, *, tenant_id: str | None, error_class: str | None,
                         workflow: str | None) -> list[int]:
    """The ids of the open dead letters matching the filter, oldest first."""
    q = _dl_filter(sa.select(dl.c.id).where(dl.c.resolved_at.is_(None)), tenant_id=tenant_id,
                   error_class=error_class, workflow=workflow)
    return [int(i) for i in conn.execute(q.order_by(dl.c.id)).scalars()]


def dead_letter_page(conn: Connection, *, tenant_id: str | None, error_class: str | None, workflow: str | None,
                     include_resolved: bool, before_id: int | None, limit: int) -> list[dict[str, Any]]:
    """Dead letters with their job's code, newest first, below ``before_id`` when given, open ones only unless
    ``include_resolved``."""
    q = _dl_filter(sa.select(dl, wj.c.job_code).select_from(dl.join(wj, wj.c.id == dl.c.job_id)),
                   tenant_id=tenant_id, error_class=error_class, workflow=workflow)
    if not include_resolved:
        q = q.where(dl.c.resolved_at.is_(None))
    if before_id:
        q = q.where(dl.c.id < before_id)
    return [dict(r) for r in conn.execute(q.order_by(dl.c.id.desc()).limit(limit)).mappings().all()]


# ----------------------------------------------------------------------------- queues / workers
def set_paused(conn: Connection, name: str, paused: bool) -> None:
    """Pause or resume a queue (its row created on first use)."""
    res = conn.execute(queues.update().where(queues.c.name == name).values(paused=paused, updated_at=utcnow()))
    if res.rowcount == 0:
        conn.execute(queues.insert().values(name=name, paused=paused, updated_at=utcnow()))


def queue_figures(conn: Connection, now: datetime, tenant_id: str | None) -> list[dict[str, Any]]:
    """Per queue with entries (counting ``tenant_id``'s jobs only when given): ``depth``, ``waiting``,
    ``processing``, ``oldest`` (the creation of the oldest waiting entry) and ``scheduled`` (waiting, not due
    before ``now``). Reads only the live queue rows."""
    q = sa.select(
        mq.c.queue_name, sa.func.count().label("depth"),
        sa.func.count().filter(mq.c.status == "queued").label("waiting"),
        sa.func.count().filter(mq.c.status == "processing").label("processing"),
        sa.func.min(sa.case((mq.c.status == "queued", mq.c.created_at))).label("oldest"),
        sa.func.count().filter(mq.c.status == "queued", mq.c.scheduled_time > now).label("scheduled"))
    return [dict(r) for r in conn.execute(scoped_jobs(q.select_from(mq), tenant_id).group_by(mq.c.queue_name)
                                          ).mappings().all()]


def paused_by_queue(conn: Connection) -> dict[str, bool]:
    """Queue name → paused, for every queue with a row."""
    return {str(name): bool(paused) for name, paused in conn.execute(sa.select(queues.c.name, queues.c.paused)).all()}


def workflow_queue_names(conn: Connection) -> set[str]:
    """The queues the workflows send jobs to."""
    return {r[0] for r in conn.execute(sa.select(wd.c.queue_name).distinct()) if r[0]}


def all_workers(conn: Connection) -> list[dict[str, Any]]:
    """Every worker's row, newest first."""
    return [dict(r) for r in conn.execute(sa.select(workers).order_by(workers.c.started_at.desc())).mappings()]


def running_jobs_by_worker(conn: Connection, tenant_id: str | None) -> dict[str, int]:
    """Worker id → how many jobs it runs (of ``tenant_id`` only when given)."""
    q = scoped_jobs(sa.select(mq.c.worker_id, sa.func.count()).select_from(mq), tenant_id)
    q = q.where(mq.c.status == "processing").group_by(mq.c.worker_id)
    return {str(w): int(n) for w, n in conn.execute(q).all()}


# ----------------------------------------------------------------------------- reads
def job_with_code(conn: Connection, job_id: int, tenant_id: str | None) -> dict[str, Any] | None:
    """A job's whole row with its workflow's code (of ``tenant_id`` when given), None when there is none."""
    q = sa.select(wj, wd.c.workflow_code).select_from(wj.join(wd, wd.c.id == wj.c.workflow_id)).where(wj.c.id == job_id)
    if tenant_id is not None:
        q = q.where(wj.c.tenant_id == tenant_id)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def executions_of(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    """The job's step executions, in order."""
    return [dict(r) for r in conn.execute(sa.select(step_executions).where(step_executions.c.job_id == job_id)
                                          .order_by(step_executions.c.id)).mappings().all()]


def events_of(conn: Connection, job_id: int, *, limit: int) -> list[dict[str, Any]]:
    """The job's first ``limit`` events, oldest first."""
    return [dict(r) for r in conn.execute(sa.select(job_events).where(job_events.c.job_id == job_id)
                                          .order_by(job_events.c.id).limit(limit)).mappings().all()]


def latest_dead_letter(conn: Connection, job_id: int) -> dict[str, Any] | None:
    """The job's latest dead letter: id, when and how it was resolved. None when it has none."""
    row = conn.execute(sa.select(dl.c.id, dl.c.resolved_at, dl.c.resolution).where(dl.c.job_id == job_id)
                       .order_by(dl.c.id.desc())).mappings().first()
    return dict(row) if row else None


def job_list(conn: Connection, *, tenant_id: str | None, status: str | None, workflow: str | None,
             queue: str | None, submitter: str | None, since: datetime | None, until: datetime | None,
             before_id: int | None, search: str | None, shadow: bool, limit: int) -> list[dict[str, Any]]:
    """Jobs, newest first, keyset-paged by id (``before_id``); shadow runs only when ``shadow`` (then only
    they). ``status``: comma-separated statuses; ``search``: a prefix of the job code."""
    q = sa.select(wj.c.id, wj.c.job_code, wj.c.status, wj.c.priority, wj.c.progress_percent, wj.c.current_step,
                  wj.c.queue_name, wj.c.submitted_by, wj.c.submitted_at, wj.c.started_at, wj.c.completed_at,
                  wj.c.finished_at, wj.c.error_class, wj.c.error_message, wj.c.workflow_version, wj.c.input_filename,
                  wj.c.tenant_id, wj.c.shadow_of,
                  wd.c.workflow_code).select_from(
        wj.join(wd, wd.c.id == wj.c.workflow_id))
    conds: list[sa.ColumnElement[bool]] = [wj.c.shadow_of.is_not(None) if shadow else wj.c.shadow_of.is_(None)]
    if tenant_id is not None:
        conds.append(wj.c.tenant_id == tenant_id)
    if status:
        conds.append(wj.c.status.in_(status.split(",")))
    if workflow:
        conds.append(wd.c.workflow_code == workflow)
    if queue:
        conds.append(wj.c.queue_name == queue)
    if submitter:
        conds.append(wj.c.submitted_by == submitter)
    if since:
        conds.append(wj.c.submitted_at >= since)
    if until:
        conds.append(wj.c.submitted_at < until)
    if before_id:
        conds.append(wj.c.id < before_id)
    if search:
        conds.append(wj.c.job_code.like(f"{search.upper().replace('%', '')}%"))
    return [dict(r) for r in conn.execute(q.where(*conds).order_by(wj.c.id.desc()).limit(limit)).mappings()]
