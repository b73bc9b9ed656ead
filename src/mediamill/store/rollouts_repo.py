"""The ``workflow_rollouts`` rows of canaries and shadow runs: the live one of a workflow and tenant (one
pair, or several at once), the latest one, the guarded canaries, a rollout's start, change of share and
end (fenced on its being active), its events in ``job_events``, and the primary jobs its figures are
computed from.

Whether to start, replace, promote or abort a rollout, and what its figures say, is decided in
``engine/rollouts.py``; this module only reads and writes, in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import job_events, workflow_jobs, workflow_rollouts
from mediamill.store.timeutil import utcnow

ro, wj = workflow_rollouts, workflow_jobs


def live(conn: Connection, workflow_id: int, tenant_id: str, kind: str) -> dict[str, Any] | None:
    """The active rollout of ``kind`` for a workflow and tenant, if any."""
    row = conn.execute(sa.select(ro).where(ro.c.workflow_id == workflow_id, ro.c.tenant_id == tenant_id,
                                           ro.c.kind == kind, ro.c.state == "active")
                       .order_by(ro.c.id.desc())).mappings().first()
    return dict(row) if row else None


def live_for(conn: Connection, pairs: set[tuple[int, str]]) -> dict[tuple[int, str, str], dict[str, Any]]:
    """Active rollouts of several (workflow id, tenant) pairs at once, by (workflow id, tenant, kind)."""
    if not pairs:
        return {}
    rows = conn.execute(sa.select(ro).where(ro.c.state == "active",
                                            ro.c.workflow_id.in_({w for w, _t in pairs}))).mappings()
    return {(r["workflow_id"], r["tenant_id"], r["kind"]): dict(r) for r in rows
            if (r["workflow_id"], r["tenant_id"]) in pairs}


def latest(conn: Connection, workflow_id: int, tenant_id: str, kind: str) -> dict[str, Any] | None:
    """The active rollout, else the most recent one (to show how it ended)."""
    row = conn.execute(sa.select(ro).where(ro.c.workflow_id == workflow_id, ro.c.tenant_id == tenant_id,
                                           ro.c.kind == kind)
                       .order_by((ro.c.state == "active").desc(), ro.c.id.desc())).mappings().first()
    return dict(row) if row else None


def get(conn: Connection, rollout_id: int) -> dict[str, Any]:
    """One rollout's row (it must exist)."""
    return dict(conn.execute(sa.select(ro).where(ro.c.id == rollout_id)).mappings().one())


def guarded_canaries(conn: Connection) -> list[tuple[int, str]]:
    """(workflow id, tenant) of every active canary with a guard: one read, usually of no row."""
    return [(int(wid), str(tenant)) for wid, tenant in conn.execute(
        sa.select(ro.c.workflow_id, ro.c.tenant_id)
        .where(ro.c.state == "active", ro.c.kind == "canary", ro.c.guard.is_not(None))).all()]


def primary_jobs(conn: Connection, rollout: dict[str, Any], *, limit: int) -> Sequence[Any]:
    """The most recent ``limit`` primary jobs (no shadows) of the rollout's workflow and tenant submitted
    since it started, newest first: version, status, error class, start and end (as attributes)."""
    q = (sa.select(wj.c.workflow_version, wj.c.status, wj.c.error_class, wj.c.started_at, wj.c.completed_at)
         .where(wj.c.workflow_id == rollout["workflow_id"], wj.c.tenant_id == rollout["tenant_id"],
                wj.c.submitted_at >= rollout["started_at"], wj.c.shadow_of.is_(None))
         .order_by(wj.c.id.desc()).limit(limit))
    return conn.execute(q).all()


def set_share(conn: Connection, rollout_id: int, *, percent: float, guard: dict[str, Any] | None) -> None:
    """Change a rollout's share and guard (None: no guard)."""
    conn.execute(ro.update().where(ro.c.id == rollout_id).values(
        percent=percent, guard=guard if guard is not None else sa.null()))


def insert(conn: Connection, *, tenant_id: str, workflow_id: int, kind: str, version: int, base_version: int | None,
           percent: float, guard: dict[str, Any] | None, by: str | None) -> int:
    """Start an active rollout (now); its id."""
    return int(conn.execute(ro.insert().values(
        tenant_id=tenant_id, workflow_id=workflow_id, kind=kind, version=version,
        base_version=base_version, percent=percent, guard=guard if guard is not None else sa.null(),
        state="active", created_by=by, started_at=utcnow()).returning(ro.c.id)).scalar_one())


def end(conn: Connection, rollout_id: int, *, state: str, reason: str) -> bool:
    """End a rollout still active (``state``: why it ended, ``reason`` in words). False when it was not
    active any more."""
    res = conn.execute(ro.update().where(ro.c.id == rollout_id, ro.c.state == "active")
                       .values(state=state, ended_at=utcnow(), end_reason=reason))
    return res.rowcount == 1


def log_event(conn: Connection, tenant_id: str, data: dict[str, Any]) -> None:
    """Record a rollout's change as a tenant's event (no job) in ``job_events``."""
    conn.execute(job_events.insert().values(job_id=None, tenant_id=tenant_id, event_type="rollout", data=data,
                                            created_at=utcnow()))
