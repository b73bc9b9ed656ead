"""The ``circuit_breakers`` rows: the states a worker caches, the fenced moves between states (a probe
taken, a probe's success closing it, a probe's failure reopening it, an opening, an operator's reset), the
failure window of an action's step executions, the transitions logged in ``job_events``, and the tenants
whose jobs wait on an action.

When a breaker opens, closes or lets a probe through is decided in ``engine/breakers.py``; this module
only reads and writes, in the caller's transaction. Every move between states is fenced on the state it
leaves, so of two workers deciding at once only one moves the breaker (the rowcount tells which).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import circuit_breakers as cb
from mediamill.store.tables import job_events, media_queue, workflow_jobs, workflow_steps
from mediamill.store.tables import step_executions as se
from mediamill.store.timeutil import utcnow


def log_transition(conn: Connection, action: str, state: str, data: dict[str, Any]) -> None:
    """Record a breaker's transition as a system event (no job) in ``job_events``."""
    conn.execute(job_events.insert().values(job_id=None, tenant_id="system", event_type="breaker",
                                            step_name=action, data={"action": action, "state": state, **data},
                                            created_at=utcnow()))


def waiting_tenants(conn: Connection, action: str, *, since: datetime) -> list[str]:
    """Tenants whose jobs wait on ``action``: live jobs (in the queue) whose workflow version has a step
    running it, and jobs that ran it since ``since``. Reads the live queue and one index range."""
    wj, ws, mq = workflow_jobs, workflow_steps, media_queue
    live = (sa.select(wj.c.tenant_id)
            .select_from(mq.join(wj, wj.c.id == mq.c.job_id)
                         .join(ws, sa.and_(ws.c.workflow_id == wj.c.workflow_id,
                                           ws.c.version == sa.func.coalesce(wj.c.workflow_version, 1))))
            .where(mq.c.status.in_(("queued", "processing")), ws.c.action == action))
    ran = (sa.select(wj.c.tenant_id).select_from(se.join(wj, wj.c.id == se.c.job_id))
           .where(se.c.action == action, se.c.completed_at >= since))
    return sorted({str(t or "default") for t in conn.execute(sa.union(live, ran)).scalars()})


def not_closed(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every breaker that is not closed (open or half-open), by action: its whole row."""
    rows = conn.execute(sa.select(cb).where(cb.c.state != "closed")).mappings().all()
    return {r["action"]: dict(r) for r in rows}


def every(conn: Connection) -> list[dict[str, Any]]:
    """Every breaker's row, by action."""
    return [dict(r) for r in conn.execute(sa.select(cb).order_by(cb.c.action)).mappings()]


def take_probe(conn: Connection, action: str, job_id: int, *, from_state: str) -> bool:
    """Move the breaker from ``from_state`` to half-open with ``job_id`` as its probe. False when another
    worker moved it first."""
    res = conn.execute(cb.update().where(cb.c.action == action, cb.c.state == from_state)
                       .values(state="half_open", probe_job_id=job_id, updated_at=utcnow()))
    return res.rowcount == 1


def close_half_open(conn: Connection, action: str) -> bool:
    """Close a half-open breaker (its probe succeeded): counts, opening and probe cleared. False when it was
    not half-open."""
    res = conn.execute(cb.update().where(cb.c.action == action, cb.c.state == "half_open")
                       .values(state="closed", failure_count=0, success_count=0, opened_at=None,
                               next_probe_at=None, probe_job_id=None, updated_at=utcnow()))
    return res.rowcount == 1


def reopen(conn: Connection, action: str, *, now: datetime, next_probe_at: datetime, last_error: str) -> bool:
    """Open a half-open breaker again (its probe failed), next probe at ``next_probe_at``. False when it
    was not half-open."""
    res = conn.execute(cb.update().where(cb.c.action == action, cb.c.state == "half_open")
                       .values(state="open", opened_at=now, next_probe_at=next_probe_at, updated_at=now,
                               last_error=last_error, probe_job_id=None))
    return res.rowcount == 1


def window(conn: Connection, action: str, *, since: datetime, failing: Collection[str]) -> tuple[int, int]:
    """``action``'s step executions completed since ``since``: (failures of the ``failing`` classes, calls
    that say something about the action — its successes and those failures; other failures excluded)."""
    classes = tuple(failing)
    row = conn.execute(sa.select(
        sa.func.count().filter(se.c.status == "failed", se.c.error_class.in_(classes)),
        sa.func.count().filter(sa.or_(se.c.status == "completed",
                                      sa.and_(se.c.status == "failed", se.c.error_class.in_(classes)))))
        .where(se.c.action == action, se.c.completed_at >= since)).one()
    return int(row[0] or 0), int(row[1] or 0)


def state_of(conn: Connection, action: str) -> str | None:
    """The breaker's state (None: no row yet, as good as closed)."""
    state = conn.execute(sa.select(cb.c.state).where(cb.c.action == action)).scalar()
    return None if state is None else str(state)


def insert(conn: Connection, action: str, values: dict[str, Any]) -> None:
    """Create the breaker's row with ``values`` (column → value)."""
    conn.execute(cb.insert().values(action=action, **values))


def open_closed(conn: Connection, action: str, values: dict[str, Any]) -> None:
    """Write ``values`` (an opening) to the breaker if it is closed."""
    conn.execute(cb.update().where(cb.c.action == action, cb.c.state == "closed").values(**values))


def opened_at(conn: Connection, action: str) -> datetime | None:
    """When the breaker last opened (None: closed, or no row)."""
    value: datetime | None = conn.execute(sa.select(cb.c.opened_at).where(cb.c.action == action)).scalar()
    return value


def reset(conn: Connection, action: str) -> bool:
    """Close the breaker whatever its state (an operator's reset). False when it has no row."""
    res = conn.execute(cb.update().where(cb.c.action == action)
                       .values(state="closed", failure_count=0, success_count=0, opened_at=None,
                               next_probe_at=None, probe_job_id=None, updated_at=utcnow()))
    return bool(res.rowcount)
