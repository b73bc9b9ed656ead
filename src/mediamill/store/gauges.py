"""The reads behind the database gauges of ``/metrics``.

Every query here reads a small table (workers, breakers, queues, alerts, sources) or a partial
index (``media_queue`` where status is queued/processing, open dead letters, pending
notifications) — never a scan of the job history — so a scrape stays cheap with millions of jobs.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store import tables as t


def queue_depths(conn: Connection, now: datetime) -> dict[tuple[str, str], int]:
    """Live queue entries per (queue, state): ``processing``, ``queued`` (due now) or ``delayed``."""
    mq = t.media_queue
    due = sa.or_(mq.c.scheduled_time.is_(None), mq.c.scheduled_time <= now)
    state = sa.case((mq.c.status == "processing", "processing"), (due, "queued"), else_="delayed")
    rows = conn.execute(
        sa.select(mq.c.queue_name, state.label("state"), sa.func.count())
        .where(mq.c.status.in_(("queued", "processing")))
        .group_by(mq.c.queue_name, state)
    ).all()
    return {(queue or "default", st): int(n) for queue, st, n in rows}


def oldest_due(conn: Connection, now: datetime) -> dict[str, datetime]:
    """Per queue, when its oldest due entry became due (a retry in back-off is not waiting yet)."""
    mq = t.media_queue
    due = sa.or_(mq.c.scheduled_time.is_(None), mq.c.scheduled_time <= now)
    rows = conn.execute(
        sa.select(mq.c.queue_name, sa.func.min(sa.func.coalesce(mq.c.scheduled_time, mq.c.created_at)))
        .where(mq.c.status == "queued", due)
        .group_by(mq.c.queue_name)
    ).all()
    return {q or "default": ts for q, ts in rows if ts}


def active_queues(conn: Connection) -> set[str]:
    """The queues of the active workflows (a small table)."""
    wd = t.workflow_definitions
    rows = conn.execute(sa.select(wd.c.queue_name).where(wd.c.is_active.is_not(False)).distinct())
    return {queue or "default" for (queue,) in rows}


def queue_paused(conn: Connection) -> dict[str, bool]:
    """Every queue row: name → paused."""
    return {str(name): bool(p) for name, p in conn.execute(sa.select(t.queues.c.name, t.queues.c.paused))}


def breaker_states(conn: Connection) -> list[tuple[str, str]]:
    """``(action, state)`` of every circuit breaker."""
    cb = t.circuit_breakers
    return [(action, state) for action, state in conn.execute(sa.select(cb.c.action, cb.c.state))]


def open_dead_letters(conn: Connection) -> list[tuple[str | None, int]]:
    """Unresolved dead letters per error class."""
    dl = t.dead_letters
    rows = conn.execute(sa.select(dl.c.error_class, sa.func.count()).where(dl.c.resolved_at.is_(None))
                        .group_by(dl.c.error_class))
    return [(error_class, int(n)) for error_class, n in rows]


def pending_notifications(conn: Connection) -> int:
    """Outbox rows (events and deliveries) waiting for the notifier."""
    wn = t.workflow_notifications
    return int(conn.execute(sa.select(sa.func.count()).where(wn.c.status == "pending")).scalar_one())


def firing_alerts(conn: Connection) -> list[tuple[str, str | None, int]]:
    """Firing alert instances per (rule, severity)."""
    a = t.alerts
    rows = conn.execute(sa.select(a.c.rule_name, a.c.severity, sa.func.count())
                        .where(a.c.state == "firing").group_by(a.c.rule_name, a.c.severity))
    return [(rule, severity, int(n)) for rule, severity, n in rows]


def source_backlogs(conn: Connection) -> list[tuple[str, str | None, int, datetime | None]]:
    """Per enabled source: ``(name, waiting_reason, files seen but not yet taken, oldest first seen)``."""
    sf, src = t.source_files, t.sources
    rows = conn.execute(sa.select(src.c.name, src.c.waiting_reason, sa.func.count(sf.c.id),
                                  sa.func.min(sf.c.first_seen_at))
                        .select_from(src.outerjoin(sf, sa.and_(sf.c.source_id == src.c.id,
                                                                sf.c.status.in_(("pending", "claimed")))))
                        .where(src.c.enabled.is_(True)).group_by(src.c.id, src.c.name, src.c.waiting_reason))
    return [(name, reason, int(n), oldest) for name, reason, n, oldest in rows]
