"""What the workers' shared housekeeping reads and writes: the orphaned jobs (a lease that ran out) and
their rescue, the look at the leases a heartbeat takes, the ageing of waiting jobs, and the prune of
finished jobs with everything that hangs off them.

When a job is rescued, requeued or dead-lettered, how much a waiting job ages and what may be pruned is
decided in ``engine/housekeeping.py``; this module only reads and writes, in the caller's transaction.
Dialect differences (row locks skipping locked rows, the age of a job in seconds) stay here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.statuses import TERMINAL_JOB
from mediamill.store.job_rows import CLAIM_FIELDS
from mediamill.store.tables import (
    dead_letters,
    job_events,
    job_outputs,
    media_queue,
    step_executions,
    step_segments,
    upload_sessions,
    workflow_jobs,
    workflow_notifications,
)
from mediamill.store.timeutil import utcnow

mq, wj = media_queue, workflow_jobs

#: The tables whose rows belong to one job (``job_id``), deleted with it, in this order.
JOB_TABLES = (job_events, step_executions, job_outputs, workflow_notifications, dead_letters, mq, step_segments)


# ----------------------------------------------------------------------------- rescue
def next_orphan(conn: Connection, seen: Sequence[int]) -> dict[str, Any] | None:
    """The queue entry whose lease ran out first, of those not in ``seen`` (locked, skipping locked ones, on
    PostgreSQL: rescuers running at once share the backlog): its id, job, worker and queue."""
    q = (sa.select(mq.c.id, mq.c.job_id, mq.c.worker_id, mq.c.queue_name).where(mq.c.status == "processing",
                                                               mq.c.lease_expires_at < utcnow(),
                                                               mq.c.id.not_in(seen))
         .order_by(mq.c.lease_expires_at).limit(1))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def lease_ends(conn: Connection, now: datetime) -> dict[str, Any]:
    """One statement over the four ends of the two partial lease indexes (queue entries and segments):
    ``jobs`` / ``segments``, whether a lease of theirs ran out before ``now``; ``jobs_next`` /
    ``segments_next``, the earliest of theirs that runs out from ``now`` on (None: none)."""

    def ends(table: sa.Table) -> tuple[Any, Any]:
        lease, busy = table.c.lease_expires_at, table.c.status == "processing"
        lapsed = sa.exists().where(busy, lease < now)
        upcoming = sa.select(sa.func.min(lease)).where(busy, lease >= now).scalar_subquery()
        return lapsed, upcoming

    jobs_lapsed, jobs_next = ends(mq)
    segments_lapsed, segments_next = ends(step_segments)
    row = conn.execute(sa.select(jobs_lapsed.label("jobs"), jobs_next.label("jobs_next"),
                                 segments_lapsed.label("segments"), segments_next.label("segments_next"))).one()
    return dict(row._mapping)


def job(conn: Connection, job_id: int) -> dict[str, Any] | None:
    """The job dict (``CLAIM_FIELDS``) of a job, None when it is gone."""
    row = conn.execute(sa.select(*CLAIM_FIELDS).where(wj.c.id == job_id)).mappings().first()
    return dict(row) if row else None


def drop_queue_entry(conn: Connection, job_id: int) -> None:
    """Delete a job's queue entry (its job is gone)."""
    conn.execute(mq.delete().where(mq.c.job_id == job_id))


def interrupt_running_steps(conn: Connection, job_id: int, *, now: datetime, reason: str) -> None:
    """Mark the job's running step executions ``interrupted`` (``worker_lost``, ``reason``) at ``now``."""
    conn.execute(step_executions.update().where(step_executions.c.job_id == job_id,
                                                step_executions.c.status == "running")
                 .values(status="interrupted", completed_at=now, error_class="worker_lost", error_message=reason))


def set_rescue_count(conn: Connection, job_id: int, rescues: int) -> None:
    """Record how many times the job was rescued."""
    conn.execute(wj.update().where(wj.c.id == job_id).values(rescue_count=rescues))


# ----------------------------------------------------------------------------- ageing
def _age_expr(conn: Connection, now: Any, aging_seconds: float, cap: int) -> Any:
    waited: Any
    least: Any
    greatest: Any
    if conn.dialect.name == "postgresql":
        waited = sa.func.extract("epoch", sa.literal(now, sa.DateTime) - mq.c.scheduled_time)
        least, greatest = sa.func.least, sa.func.greatest
    else:
        waited = (sa.func.julianday(sa.literal(now, sa.DateTime)) - sa.func.julianday(mq.c.scheduled_time)) * 86400.0
        least, greatest = sa.func.min, sa.func.max
    aged = mq.c.base_priority + sa.cast(sa.func.floor(waited / aging_seconds), sa.Integer)
    return greatest(mq.c.base_priority, least(cap, aged))


def age_waiting(conn: Connection, *, now: datetime, aging_seconds: float, cap: int) -> int:
    """Raise each queued job's priority to its own (``base_priority``) plus one point per ``aging_seconds``
    waited since it was scheduled, up to ``cap`` (never lowering it); how many jobs moved."""
    target = _age_expr(conn, now, aging_seconds, cap)
    res = conn.execute(mq.update().where(mq.c.status == "queued", mq.c.base_priority.is_not(None),
                                         mq.c.scheduled_time <= now - timedelta(seconds=aging_seconds),
                                         mq.c.priority < target)
                       .values(priority=target, aged_at=now))
    return int(res.rowcount)


# ----------------------------------------------------------------------------- prune
def prunable_jobs(conn: Connection, finished_before: datetime, *, limit: int) -> list[int]:
    """Up to ``limit`` jobs in a terminal state that finished before ``finished_before``, except those with an
    open dead letter."""
    open_dl = sa.select(dead_letters.c.job_id).where(dead_letters.c.resolved_at.is_(None))
    return [int(i) for i in conn.execute(sa.select(wj.c.id).where(
        wj.c.status.in_(TERMINAL_JOB), wj.c.finished_at < finished_before,
        wj.c.id.not_in(open_dl)).limit(limit)).scalars()]


def output_keys(conn: Connection, job_ids: Sequence[int]) -> list[str]:
    """The storage keys of the jobs' outputs, then of their chunked encodes' parts (parts never joined: a
    cancelled or failed job; joined ones are gone already)."""
    keys = list(conn.execute(sa.select(job_outputs.c.storage_key).where(job_outputs.c.job_id.in_(job_ids)))
                .scalars())
    keys += [k for ks in conn.execute(sa.select(step_segments.c.output_keys)
                                      .where(step_segments.c.job_id.in_(job_ids))).scalars() for k in ks or []]
    return keys


def input_keys(conn: Connection, job_ids: Sequence[int]) -> list[str]:
    """The jobs' input keys (each once, sorted)."""
    return sorted({k for k in conn.execute(sa.select(wj.c.input_key).where(wj.c.id.in_(job_ids))).scalars() if k})


def delete_jobs(conn: Connection, job_ids: Sequence[int]) -> None:
    """Delete the jobs and every row of theirs (events, executions, outputs, notifications, dead letters,
    queue entries, segments)."""
    for table in JOB_TABLES:
        conn.execute(table.delete().where(table.c.job_id.in_(job_ids)))
    conn.execute(wj.delete().where(wj.c.id.in_(job_ids)))


def delete_finished_uploads(conn: Connection, key: str, completed_before: Any) -> None:
    """Delete the upload sessions of ``key`` that completed before ``completed_before``."""
    us = upload_sessions
    conn.execute(us.delete().where(us.c.storage_key == key, us.c.completed_at < completed_before))
