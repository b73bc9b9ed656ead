"""Background housekeeping shared by every worker (safe to run in many at once, every write guarded):
rescuing orphaned jobs, ageing waiting jobs, pruning finished ones."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mediamill.engine import transitions as tx
from mediamill.engine import wakeup
from mediamill.statuses import TERMINAL_JOB
from mediamill.storage import Storage
from mediamill.store import liveness, workflow_repo
from mediamill.store.inputs import input_referenced, lock_input
from mediamill.store.tables import (
    dead_letters,
    job_events,
    job_outputs,
    media_queue,
    step_executions,
    step_segments,
    upload_sessions,
    workers,
    workflow_jobs,
    workflow_notifications,
)
from mediamill.store.timeutil import utcnow

log = logging.getLogger("mediamill.housekeeping")
mq, wj = media_queue, workflow_jobs


def rescue_orphaned_jobs(engine: Engine, *, max_rescues: int,
                         on_finish: Callable[[dict[str, Any], str, str, str | None], None] | None = None,
                         limit: int = 100, budget_seconds: float | None = None) -> int:
    """Re-queue jobs whose owner stopped heart-beating; dead-letter a job that did it ``max_rescues`` times.

    Each job is rescued in a transaction of its own, committed before the next one is taken. After a crash
    storm or an outage the backlog of orphans is large, and rescuing it in one transaction takes seconds on a
    busy machine: a rescuer that dies (or loses its connection) before the end would roll all of it back, the
    next rescuer would find a larger backlog still, and jobs would stay orphaned for as long as rescuers keep
    dying. Job by job, every rescue that finished stays done, and rescuers running at once share the backlog
    (``SKIP LOCKED``). At most ``limit`` jobs per pass, and no new one after ``budget_seconds`` (the caller's
    heartbeat must not wait for a long pass: its own leases would lapse). A job put back in its queue wakes the
    idle workers (NOTIFY at commit: with LISTEN they wait for it instead of polling).
    """
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    rescued = 0
    seen: list[int] = []  # each row once per pass, even one whose rescue was refused and left it as it was
    for _ in range(limit):
        if deadline is not None and time.monotonic() >= deadline:
            break
        with engine.begin() as conn:
            q = (sa.select(mq.c.id, mq.c.job_id, mq.c.worker_id, mq.c.queue_name).where(mq.c.status == "processing",
                                                                       mq.c.lease_expires_at < utcnow(),
                                                                       mq.c.id.not_in(seen))
                 .order_by(mq.c.lease_expires_at).limit(1))
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            row = conn.execute(q).first()
            if row is None:
                break
            seen.append(row.id)
            got = _rescue_one(conn, row.job_id, row.worker_id, max_rescues, on_finish)
            if got and row.queue_name:
                wakeup.notify_in_tx(conn, [row.queue_name])
            rescued += got
    return rescued


@dataclass(frozen=True)
class Lapses:
    """What a heartbeat's look at the leases found: whether a job's or a segment's lease ran out (a rescue is
    due), and the earliest lease that runs out within the horizon (None: none does)."""

    jobs: bool
    segments: bool
    upcoming: datetime | None


def lapsed_leases(conn: Connection, *, horizon_seconds: float) -> Lapses:
    """One statement (four ends of the two partial lease indexes) in the caller's transaction: is a rescue of jobs
    or of segments due, and when does the next lease run out, so the caller comes back exactly then instead of
    polling. In a healthy fleet no lease has run out and the rescues themselves cost nothing."""
    now = utcnow()

    def ends(table: sa.Table) -> tuple[Any, Any]:
        lease, busy = table.c.lease_expires_at, table.c.status == "processing"
        lapsed = sa.exists().where(busy, lease < now)
        upcoming = sa.select(sa.func.min(lease)).where(busy, lease >= now).scalar_subquery()
        return lapsed, upcoming

    jobs_lapsed, jobs_next = ends(mq)
    segments_lapsed, segments_next = ends(step_segments)
    row = conn.execute(sa.select(jobs_lapsed.label("jobs"), jobs_next.label("jobs_next"),
                                 segments_lapsed.label("segments"), segments_next.label("segments_next"))).one()
    horizon = now + timedelta(seconds=horizon_seconds)
    upcoming = min((t for t in (row.jobs_next, row.segments_next) if t is not None and t < horizon), default=None)
    return Lapses(bool(row.jobs), bool(row.segments), upcoming)


def _rescue_one(conn: Connection, job_id: int, owner: str | None, max_rescues: int,
                on_finish: Callable[[dict[str, Any], str, str, str | None], None] | None) -> int:
    row = conn.execute(sa.select(*tx.CLAIM_FIELDS).where(wj.c.id == job_id)).mappings().first()
    if row is None:
        conn.execute(mq.delete().where(mq.c.job_id == job_id))
        return 0
    job = dict(row)
    now = utcnow()
    reason = f"worker {owner} stopped heart-beating (lease expired)"
    conn.execute(step_executions.update().where(step_executions.c.job_id == job_id,
                                                step_executions.c.status == "running")
                 .values(status="interrupted", completed_at=now, error_class="worker_lost", error_message=reason))
    rescues = (job["rescue_count"] or 0) + 1
    conn.execute(wj.update().where(wj.c.id == job_id).values(rescue_count=rescues))
    tx.add_event(conn, job, "rescue", None, {"worker": owner, "rescues": rescues})
    code, wtype, version = workflow_repo.job_workflow(conn, job)
    if job["cancel_requested"] or rescues >= max_rescues:
        poison = not job["cancel_requested"]
        finish = tx.Finish(job=job, status="failed" if poison else "cancelled", workflow_code=code,
                           workflow_type=wtype, workflow_version=version, total_steps=0, poison=poison,
                           error_class="resource" if poison else "cancelled", failed_step=None,
                           error_message=(f"poison job: its run killed the worker {rescues} times" if poison
                                          else "cancelled by request"))
        accepted = tx.finish_jobs(conn, None, [finish])
        if accepted and on_finish:
            on_finish(job, finish.status, code, finish.error_class)
        return 1
    return int(tx.requeue(conn, job=job, worker_id=None, delay=0, reason="rescued", count_retry=False,
                          event={"reason": reason, "rescues": rescues}, keep_place=True))


def mark_and_prune_workers(engine: Engine, *, lease_seconds: float, retention_hours: float) -> tuple[int, int]:
    """Mark workers whose heartbeat is older than the lease ``lost`` (killed, host cut off: they never said
    goodbye), and delete the rows of stopped or lost workers older than the retention. A lost worker that comes
    back heart-beats itself ``running`` again. Returns (marked, pruned)."""
    with engine.begin() as conn:
        return mark_and_prune_workers_on(conn, lease_seconds=lease_seconds, retention_hours=retention_hours)


def mark_and_prune_workers_on(conn: Connection, *, lease_seconds: float, retention_hours: float) -> tuple[int, int]:
    """``mark_and_prune_workers`` in the caller's transaction (a worker's heartbeat)."""
    now = utcnow()
    w = workers
    marked = conn.execute(w.update().where(w.c.status.notin_(liveness.DEAD_STATUSES),
                                           w.c.heartbeat_at <= liveness.cutoff(now, lease_seconds))
                          .values(status="lost")).rowcount
    pruned = 0
    if retention_hours:
        pruned = conn.execute(w.delete().where(w.c.status.in_(liveness.DEAD_STATUSES),
                                               w.c.heartbeat_at < now - timedelta(hours=retention_hours))
                              ).rowcount
    if marked:
        log.warning("marked %d worker(s) lost: no heartbeat for %s s", marked, lease_seconds)
    return marked, pruned


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


def age_waiting_jobs(engine: Engine, *, aging_seconds: float, cap: int = 10) -> int:
    """A queued job gains one priority point per ``aging_seconds`` waited, up to ``cap``: once every waiting job
    has reached the cap, the oldest runs first — so low priority waits at most ``(cap - priority) × aging_seconds``
    behind a stream of higher priority work. The job's own priority (``base_priority``) is kept for retries."""
    with engine.begin() as conn:
        return age_waiting_on(conn, aging_seconds=aging_seconds, cap=cap)


def age_waiting_on(conn: Connection, *, aging_seconds: float, cap: int = 10) -> int:
    """``age_waiting_jobs`` in the caller's transaction (a worker's heartbeat)."""
    now = utcnow()
    target = _age_expr(conn, now, aging_seconds, cap)
    res = conn.execute(mq.update().where(mq.c.status == "queued", mq.c.base_priority.is_not(None),
                                         mq.c.scheduled_time <= now - timedelta(seconds=aging_seconds),
                                         mq.c.priority < target)
                       .values(priority=target, aged_at=now))
    return res.rowcount


def prune_finished_jobs(engine: Engine, storage: Storage, *, days: int, batch: int = 500) -> int:
    """Delete jobs that finished (any terminal state, ``finished_at``) more than ``days`` ago, with their events,
    executions, outputs and files.

    Failed jobs whose dead letter is still open are kept. An input object goes only when nothing
    refers to it any more (another job, an open dead letter, an upload younger than ``days``):
    checked and deleted under the key's lock inside the transaction (see ``store.inputs``).
    """
    cutoff = utcnow() - timedelta(days=days)
    with engine.begin() as conn:
        open_dl = sa.select(dead_letters.c.job_id).where(dead_letters.c.resolved_at.is_(None))
        ids = list(conn.execute(sa.select(wj.c.id).where(
            wj.c.status.in_(TERMINAL_JOB), wj.c.finished_at < cutoff,
            wj.c.id.not_in(open_dl)).limit(batch)).scalars())
        if not ids:
            return 0
        outputs = list(conn.execute(sa.select(job_outputs.c.storage_key).where(job_outputs.c.job_id.in_(ids)))
                       .scalars())
        # parts of chunked encodes that were never joined (a cancelled or failed job): joined ones are gone already
        outputs += [k for keys in conn.execute(sa.select(step_segments.c.output_keys)
                                               .where(step_segments.c.job_id.in_(ids))).scalars() for k in keys or []]
        inputs = sorted({k for k in conn.execute(sa.select(wj.c.input_key).where(wj.c.id.in_(ids))).scalars() if k})
        for table in (job_events, step_executions, job_outputs, workflow_notifications, dead_letters, mq,
                      step_segments):
            conn.execute(table.delete().where(table.c.job_id.in_(ids)))
        conn.execute(wj.delete().where(wj.c.id.in_(ids)))
        _delete_files(storage, outputs + _unreferenced(conn, inputs, cutoff))
    return len(ids)


def _unreferenced(conn: Connection, keys: list[str], cutoff: Any) -> list[str]:
    """The input keys nothing refers to any more, each locked until the transaction ends. Uploads
    that finished before ``cutoff`` go with their last job."""
    us = upload_sessions
    free = []
    for key in keys:
        lock_input(conn, key)
        conn.execute(us.delete().where(us.c.storage_key == key, us.c.completed_at < cutoff))
        if not input_referenced(conn, key):
            free.append(key)
    return free


def _delete_files(storage: Storage, keys: list[str]) -> None:
    # inside the transaction: a submit reusing one of these keys waits for it, then finds no reference
    for key in keys:
        try:
            storage.delete(key)
        except Exception:  # a missing file must not stop pruning
            log.warning("prune: could not delete %s", key)
