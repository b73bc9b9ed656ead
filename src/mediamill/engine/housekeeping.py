"""Background housekeeping shared by every worker (safe to run in many at once, every write guarded):
rescuing orphaned jobs, ageing waiting jobs, pruning finished ones."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mediamill.engine import transitions as tx
from mediamill.engine import wakeup
from mediamill.storage import Storage
from mediamill.store import liveness
from mediamill.store.inputs import input_referenced, lock_input
from mediamill.store.tables import (
    dead_letters,
    job_events,
    job_outputs,
    media_queue,
    step_executions,
    upload_sessions,
    workers,
    workflow_definitions,
    workflow_jobs,
    workflow_notifications,
)
from mediamill.store.timeutil import utcnow

log = logging.getLogger("mediamill.housekeeping")
mq, wj = media_queue, workflow_jobs


def rescue_orphaned_jobs(engine: Engine, *, max_rescues: int,
                         on_finish: Callable[[dict[str, Any], str, str, str | None], None] | None = None) -> int:
    """Re-queue jobs whose owner stopped heart-beating; dead-letter a job that did it ``max_rescues`` times."""
    with engine.begin() as conn:
        return rescue_on(conn, max_rescues=max_rescues, on_finish=on_finish)[0]


def rescue_on(conn: Connection, *, max_rescues: int,
              on_finish: Callable[[dict[str, Any], str, str, str | None], None] | None = None,
              horizon_seconds: float = 0.0) -> tuple[int, datetime | None]:
    """``rescue_orphaned_jobs`` in the caller's transaction. Also returns the earliest lease that runs out
    within ``horizon_seconds`` (None: none does), so the caller can come back exactly then instead of polling:
    in a healthy fleet every lease reaches past the horizon and this is one indexed read."""
    now = utcnow()
    rows = conn.execute(sa.select(mq.c.id, mq.c.lease_expires_at)
                        .where(mq.c.status == "processing",
                               mq.c.lease_expires_at < now + timedelta(seconds=horizon_seconds))
                        .order_by(mq.c.lease_expires_at).limit(100)).all()
    expired = [r.id for r in rows if r.lease_expires_at < now]
    upcoming = min((r.lease_expires_at for r in rows if r.lease_expires_at >= now), default=None)
    if not expired:
        return 0, upcoming
    q = (sa.select(mq.c.id, mq.c.job_id, mq.c.worker_id, mq.c.queue_name)
         .where(mq.c.id.in_(expired), mq.c.status == "processing", mq.c.lease_expires_at < now)
         .order_by(mq.c.lease_expires_at))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rescued = 0
    woken: set[str] = set()
    for row in conn.execute(q).all():
        got = _rescue_one(conn, row.job_id, row.worker_id, max_rescues, on_finish)
        rescued += got
        if got and row.queue_name:
            woken.add(row.queue_name)
    wakeup.notify_in_tx(conn, woken)  # idle workers wait on NOTIFY, not a poll
    return rescued, upcoming


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
    code, wtype, version = _workflow_facts(conn, job)
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
    """``mark_and_prune_workers`` in the caller's transaction."""
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


def _workflow_facts(conn: Connection, job: dict[str, Any]) -> tuple[str, str, int]:
    row = conn.execute(sa.select(workflow_definitions.c.workflow_code, workflow_definitions.c.workflow_type)
                       .where(workflow_definitions.c.id == job["workflow_id"])).one()
    return row[0], row[1] or "generic", job["workflow_version"] or 1


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
    """``age_waiting_jobs`` in the caller's transaction."""
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
            wj.c.status.in_(tx.TERMINAL), wj.c.finished_at < cutoff,
            wj.c.id.not_in(open_dl)).limit(batch)).scalars())
        if not ids:
            return 0
        outputs = list(conn.execute(sa.select(job_outputs.c.storage_key).where(job_outputs.c.job_id.in_(ids)))
                       .scalars())
        inputs = sorted({k for k in conn.execute(sa.select(wj.c.input_key).where(wj.c.id.in_(ids))).scalars() if k})
        for table in (job_events, step_executions, job_outputs, workflow_notifications, dead_letters, mq):
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
