"""The alert evaluator's reads and rows: the figures alert rules watch, the ``alerts`` instances,
the ``alert_rules`` table, and the evaluation lock.

Every figure here is a small indexed read (live queue rows, open dead letters, workers, breakers,
jobs finished in a window), so an evaluation round stays cheap with millions of jobs. What the
figures mean — thresholds, labels, pending → firing → resolved — is decided in ``notify/alerting.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store import tables as t

#: Alert instances still open: waiting out their ``for``, or firing.
OPEN_STATES = ("pending", "firing")


# --------------------------------------------------------------------------- rules
def rule_rows(conn: Connection) -> list[dict[str, Any]]:
    """The rows of the ``alert_rules`` table, by id."""
    ar = t.alert_rules
    return [dict(r) for r in conn.execute(sa.select(ar).order_by(ar.c.id)).mappings()]


# --------------------------------------------------------------------------- figures
def finished_since(conn: Connection, cutoff: datetime,
                   workflow: str | None) -> tuple[int, list[tuple[str | None, int]]]:
    """(jobs finished since ``cutoff``, failed ones per error class) — every terminal state carries
    ``finished_at``, failed and cancelled jobs included; shadow runs are not counted."""
    j, wd = t.workflow_jobs, t.workflow_definitions
    query = (sa.select(j.c.status, j.c.error_class, sa.func.count())
             .where(j.c.finished_at >= cutoff, j.c.shadow_of.is_(None)).group_by(j.c.status, j.c.error_class))
    if workflow:
        query = query.where(j.c.workflow_id.in_(sa.select(wd.c.id).where(wd.c.workflow_code == workflow)))
    rows = conn.execute(query).all()
    failed = [(klass, int(n)) for status, klass, n in rows if status == "failed"]
    return sum(int(n) for _s, _k, n in rows), failed


def waiting_by_queue(conn: Connection, now: datetime, queue: str | None) -> dict[str, tuple[int, datetime]]:
    """Per queue (``queue`` only, when given): entries due now and when the oldest became due."""
    mq = t.media_queue
    due = sa.and_(mq.c.status == "queued", sa.or_(mq.c.scheduled_time.is_(None), mq.c.scheduled_time <= now))
    query = (sa.select(mq.c.queue_name, sa.func.count(), sa.func.min(sa.func.coalesce(mq.c.scheduled_time,
                                                                                       mq.c.created_at)))
             .where(due).group_by(mq.c.queue_name))
    if queue:
        query = query.where(mq.c.queue_name == queue)
    return {q or "default": (n, oldest) for q, n, oldest in conn.execute(query)}


def dead_lettered_since(conn: Connection, since: datetime) -> list[tuple[str | None, int]]:
    """Open dead letters created since ``since``, counted per error class."""
    dl = t.dead_letters
    query = (sa.select(dl.c.error_class, sa.func.count())
             .where(dl.c.resolved_at.is_(None), dl.c.created_at >= since)
             .group_by(dl.c.error_class))
    return [(error_class, int(n)) for error_class, n in conn.execute(query)]


def paused_queues(conn: Connection) -> set[str]:
    """The names of the paused queues."""
    return {name for name, p in conn.execute(sa.select(t.queues.c.name, t.queues.c.paused)) if p}


def open_breakers(conn: Connection, action: str | None) -> list[tuple[str, str, int | None, str | None]]:
    """``(action, state, failure_count, last_error)`` of every breaker not closed (``action``'s only, when given)."""
    cb = t.circuit_breakers
    query = sa.select(cb.c.action, cb.c.state, cb.c.failure_count, cb.c.last_error).where(cb.c.state != "closed")
    if action:
        query = query.where(cb.c.action == action)
    return [(a, s, n, e) for a, s, n, e in conn.execute(query)]


# --------------------------------------------------------------------------- alert instances
def open_alerts(conn: Connection, rule_name: str) -> list[dict[str, Any]]:
    """A rule's alert instances still pending or firing."""
    a = t.alerts
    return [dict(r) for r in conn.execute(
        sa.select(a).where(a.c.rule_name == rule_name, a.c.state.in_(OPEN_STATES))).mappings()]


def insert_alert(conn: Connection, values: dict[str, Any]) -> int:
    """Insert an alert instance; its id."""
    a = t.alerts
    return int(conn.execute(a.insert().values(**values).returning(a.c.id)).scalar_one())


def update_alert(conn: Connection, alert_id: int, values: dict[str, Any]) -> None:
    a = t.alerts
    conn.execute(a.update().where(a.c.id == alert_id).values(**values))


def delete_alert(conn: Connection, alert_id: int) -> None:
    a = t.alerts
    conn.execute(a.delete().where(a.c.id == alert_id))


def alert_rows(conn: Connection, *, state: str | None, limit: int, rules: set[str] | None) -> list[dict[str, Any]]:
    """Alert rows newest first (``state``: pending | firing | resolved | active = pending or firing;
    ``rules``: only these rule names)."""
    a = t.alerts
    query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
    if rules is not None:
        query = query.where(a.c.rule_name.in_(sorted(rules)))
    if state == "active":
        query = query.where(a.c.state.in_(OPEN_STATES))
    elif state:
        query = query.where(a.c.state == state)
    return [dict(r) for r in conn.execute(query).mappings()]


def try_evaluation_lock(conn: Connection, key: int) -> bool:
    """Take the evaluator's lock for this transaction: an advisory lock on PostgreSQL (False when
    another evaluator holds it); on SQLite the transaction began IMMEDIATE, so evaluators already
    take turns."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(key))).scalar())
