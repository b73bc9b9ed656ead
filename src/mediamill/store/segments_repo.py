"""The ``step_segments`` rows of chunked encodes: a unit's plan, the claim of due segments (and when the
next one is due), their leases, the fenced write of a segment's outcome, the wake-up of the parked job and
the rescue of orphaned segments.

Segments are claimed like jobs: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite's transactions are serial
already), a lease extended by the heartbeat, every write fenced on ``worker_id = me AND status =
'processing'``. When to split, run, retry, fail or join is decided in ``engine/segments.py``; this module
only reads and writes, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.bulk import in_ids
from mediamill.store.tables import media_queue, queues, step_segments, workflow_jobs
from mediamill.store.timeutil import utcnow

ss, mq, wj = step_segments, media_queue, workflow_jobs
#: The ``media_queue.wait_reason`` of a job parked while its segments run.
WAIT_REASON = "segments"
#: Statuses of a segment that has not finished (waiting for a worker, or running).
OPEN_STATUSES = ("queued", "processing")


def load_plan(conn: Connection, job: dict[str, Any], step_name: str) -> list[dict[str, Any]]:
    """The unit's current segment rows (video by sequence, then audio), locked on PostgreSQL so a segment
    finishing meanwhile waits for the park to commit and then wakes the job."""
    q = (sa.select(ss).where(ss.c.job_id == job["id"], ss.c.step_name == step_name,
                             ss.c.run_number == (job["run_number"] or 1), ss.c.status != "discarded")
         .order_by(ss.c.kind.desc(), ss.c.seq))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return [dict(r) for r in conn.execute(q).mappings()]


def insert_plan(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert a unit's segment rows (dicts of column → value)."""
    conn.execute(ss.insert(), rows)


def discard(conn: Connection, ids: Sequence[int]) -> None:
    """Mark a plan's rows ``discarded`` (open ones too: their late results are then refused)."""
    conn.execute(ss.update().where(in_ids(conn, ss.c.id, ids))
                 .values(status="discarded", worker_id=None, lease_expires_at=None))


def claim(conn: Connection, *, worker_id: str, queue: str | None, limit: int, lease_seconds: float
          ) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due segments of live jobs, best priority first (exactly ``limit`` at most)."""
    now = utcnow()
    pick = (sa.select(ss.c.id).where(*_claimable(queue), ss.c.scheduled_time <= now)
            .order_by(ss.c.priority.desc(), ss.c.scheduled_time, ss.c.id).limit(limit))
    picked: Any = ss.c.id.in_(pick.scalar_subquery())
    if conn.dialect.name == "postgresql":  # an InitPlan: the locking pick runs once (see lifecycle.claim)
        picked = ss.c.id == sa.any_(sa.func.array(pick.with_for_update(skip_locked=True).scalar_subquery()))
    rows = conn.execute(ss.update().where(picked).values(
        status="processing", worker_id=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds),
        attempts=ss.c.attempts + 1, started_at=now).returning(*ss.c)).mappings().all()
    return [dict(r) for r in rows]


def _claimable(queue: str | None) -> list[Any]:
    """Queued segments of live jobs in unpaused queues (of ``queue``, or any), due or not."""
    live = sa.select(wj.c.id).where(wj.c.id == ss.c.job_id, wj.c.status.in_(("queued", "processing")),
                                    wj.c.cancel_requested.is_not(True))
    where = [ss.c.status == "queued", sa.exists(live),
             ~sa.exists().where(queues.c.name == ss.c.queue_name, queues.c.paused.is_(True))]
    return where if queue is None else [*where, ss.c.queue_name == queue]


def next_due(conn: Connection, queue: str | None) -> datetime | None:
    """When the earliest segment a claim could take (of ``queue``, or any) becomes due."""
    return conn.execute(sa.select(sa.func.min(ss.c.scheduled_time)).where(*_claimable(queue))).scalar()


def extend_leases(conn: Connection, *, worker_id: str, until: datetime, ids: Sequence[int]) -> None:
    """Move the lease of the worker's running segments among ``ids`` to ``until``."""
    conn.execute(ss.update().where(in_ids(conn, ss.c.id, ids), ss.c.worker_id == worker_id,
                                   ss.c.status == "processing")
                 .values(lease_expires_at=until))


def finish(conn: Connection, row: dict[str, Any], worker_id: str, values: dict[str, Any]) -> bool:
    """A fenced write of a segment's outcome (``values``); wakes its parked job when it was the last open one.
    False (nothing written) when the worker no longer holds the segment.

    The job's queue row is locked first: two segments finishing at once would each see the other still
    open (neither commit visible to the other) and neither would wake the job; locked, they take turns.
    """
    lock = sa.select(mq.c.id).where(mq.c.job_id == row["job_id"])
    if conn.dialect.name == "postgresql":
        conn.execute(lock.with_for_update())
    res = conn.execute(ss.update().where(ss.c.id == row["id"], ss.c.worker_id == worker_id,
                                         ss.c.status == "processing").values(**values))
    if res.rowcount != 1:
        return False
    if values["status"] != "queued":
        wake_parent(conn, row)
    return True


def wake_parent(conn: Connection, row: dict[str, Any]) -> bool:
    """Make the parked job due now when none of its unit's segments is open any more."""
    still = conn.execute(sa.select(ss.c.id).where(ss.c.job_id == row["job_id"], ss.c.step_name == row["step_name"],
                                                  ss.c.run_number == row["run_number"], ss.c.status.in_(OPEN_STATUSES))
                         .limit(1)).first()
    if still is not None:
        return False
    res = conn.execute(mq.update().where(mq.c.job_id == row["job_id"], mq.c.status == "queued",
                                         mq.c.wait_reason == WAIT_REASON).values(scheduled_time=utcnow()))
    return res.rowcount == 1


def hand_back(conn: Connection, segment_id: int, worker_id: str) -> None:
    """Give a running segment back unfinished (fenced): queued again at once, the attempt its claim counted
    taken back."""
    conn.execute(ss.update().where(ss.c.id == segment_id, ss.c.worker_id == worker_id, ss.c.status == "processing")
                 .values(status="queued", worker_id=None, lease_expires_at=None, attempts=ss.c.attempts - 1))


def orphaned(conn: Connection, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` running segments whose lease expired before ``now`` (locked, skipping locked ones, on
    PostgreSQL): id, job, tenant, step, run, sequence, worker and attempts."""
    q = (sa.select(ss.c.id, ss.c.job_id, ss.c.tenant_id, ss.c.step_name, ss.c.run_number, ss.c.seq,
                   ss.c.worker_id, ss.c.attempts, ss.c.max_attempts)
         .where(ss.c.status == "processing", ss.c.lease_expires_at < now).limit(limit))
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    return [dict(r) for r in conn.execute(q).mappings()]


def release(conn: Connection, segment_id: int, values: dict[str, Any]) -> None:
    """Write ``values`` to a segment still running (its worker is gone: queued again, or failed)."""
    conn.execute(ss.update().where(ss.c.id == segment_id, ss.c.status == "processing").values(**values))
