"""The notifier's rows: outbox events and their deliveries (``workflow_notifications``) and the
channels they go to (``notification_channels``).

What the rows mean — expansion, claims, back-off, secrets — is decided in ``notify/``; this module
only reads and writes them. PostgreSQL skips rows another dispatcher is claiming (``FOR UPDATE SKIP
LOCKED``); SQLite needs nothing, its write transactions begin ``IMMEDIATE`` and so take turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.bulk import in_ids
from mediamill.store.tables import notification_channels as nc
from mediamill.store.tables import workflow_definitions as wd
from mediamill.store.tables import workflow_jobs as wj
from mediamill.store.tables import workflow_notifications as wn

#: The status of an outbox event row once it has been expanded into its deliveries.
EXPANDED = "dispatched"
#: Statuses a delivery or event row keeps for good (what retention prunes).
FINISHED = ("sent", "failed", "cancelled", EXPANDED)


def _skip_locked(conn: Connection, query: Any) -> Any:
    return query.with_for_update(skip_locked=True) if conn.dialect.name == "postgresql" else query


# --------------------------------------------------------------------------- events → deliveries
def take_pending_events(conn: Connection, *, limit: int) -> list[dict[str, Any]]:
    """Pending event rows (``channel`` NULL), oldest first, locked for this transaction on PostgreSQL."""
    query = (sa.select(wn).where(wn.c.status == "pending", wn.c.channel.is_(None))
             .order_by(wn.c.id).limit(limit))
    return [dict(r) for r in conn.execute(_skip_locked(conn, query)).mappings()]


def add_deliveries(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert delivery rows (one statement)."""
    conn.execute(wn.insert(), list(rows))


def mark_expanded(conn: Connection, event_row_ids: Sequence[int], *, now: datetime, deliveries: int) -> None:
    """Event rows are expanded (one statement): each counts its ``deliveries``, or says none matched."""
    conn.execute(wn.update().where(in_ids(conn, wn.c.id, list(event_row_ids))).values(
        status=EXPANDED, sent_at=now, attempts=deliveries, next_attempt_at=None,
        error_message=None if deliveries else "no matching channel"))


def job_facts(conn: Connection, job_id: int) -> Any:
    """``(workflow_type, input_filename, job_code)`` of a job, or None."""
    return conn.execute(
        sa.select(wd.c.workflow_type, wj.c.input_filename, wj.c.job_code)
        .select_from(wj.outerjoin(wd, wd.c.id == wj.c.workflow_id)).where(wj.c.id == job_id)
    ).first()


# --------------------------------------------------------------------------- claiming deliveries
def claim_due_deliveries(conn: Connection, *, worker: str, limit: int, lock_seconds: float,
                         now: datetime) -> list[int]:
    """Lock up to ``limit`` due, unlocked delivery rows for ``worker`` and count the attempt; their ids."""
    query = (sa.select(wn.c.id)
             .where(wn.c.status == "pending", wn.c.channel.is_not(None), wn.c.next_attempt_at <= now)
             .where(sa.or_(wn.c.locked_until.is_(None), wn.c.locked_until < now))
             .order_by(wn.c.next_attempt_at, wn.c.id).limit(limit))
    ids = list(conn.execute(_skip_locked(conn, query)).scalars())
    if ids:
        conn.execute(wn.update().where(wn.c.id.in_(ids)).values(
            locked_by=worker, locked_until=now + timedelta(seconds=lock_seconds), attempts=wn.c.attempts + 1))
    return ids


def deliveries_with_context(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    """Delivery rows with their channel's config (``ch_config``, ``ch_enabled``) and job facts
    (``job_request_id``, ``input_filename``, ``jcode``, ``workflow_type``)."""
    query = (sa.select(wn, nc.c.config.label("ch_config"), nc.c.enabled.label("ch_enabled"),
                       wj.c.request_id.label("job_request_id"), wj.c.input_filename, wj.c.job_code.label("jcode"),
                       wd.c.workflow_type)
             .select_from(wn.outerjoin(nc, nc.c.id == wn.c.channel_id).outerjoin(wj, wj.c.id == wn.c.job_id)
                          .outerjoin(wd, wd.c.id == wj.c.workflow_id))
             .where(wn.c.id.in_(ids)).order_by(wn.c.id))
    return [dict(r) for r in conn.execute(query).mappings()]


def attempt_log(conn: Connection, row_id: int) -> list[dict[str, Any]]:
    """The attempts recorded on a row so far."""
    log = conn.execute(sa.select(wn.c.attempt_log).where(wn.c.id == row_id)).scalar()
    return list(log) if isinstance(log, list) else []


def update_held_delivery(conn: Connection, row_id: int, *, worker: str, values: dict[str, Any]) -> None:
    """Change a delivery row, only while ``worker`` still holds its lock."""
    conn.execute(wn.update().where(wn.c.id == row_id, wn.c.locked_by == worker).values(**values))


# --------------------------------------------------------------------------- replay / test / prune
def requeue_event(conn: Connection, row_id: int, *, now: datetime) -> None:
    """Put an event row back to pending, due now (it is expanded again)."""
    conn.execute(wn.update().where(wn.c.id == row_id).values(status="pending", next_attempt_at=now))


def insert_delivery(conn: Connection, values: dict[str, Any]) -> int:
    """Insert one delivery row; its id."""
    return int(conn.execute(wn.insert().values(**values).returning(wn.c.id)).scalar_one())


def prune_finished(conn: Connection, *, cutoff: datetime) -> int:
    """Delete finished deliveries and expanded events created before ``cutoff``; how many."""
    result = conn.execute(wn.delete().where(wn.c.created_at < cutoff, wn.c.status.in_(FINISHED)))
    return int(result.rowcount or 0)


# --------------------------------------------------------------------------- the delivery log
def find_notifications(conn: Connection, *, equal: dict[str, Any], include_events: bool, before_id: int | None,
                       limit: int) -> list[dict[str, Any]]:
    """Rows newest first whose columns equal ``equal`` (None values ignored), below ``before_id``;
    deliveries only unless ``include_events``."""
    query = sa.select(wn).order_by(wn.c.id.desc()).limit(limit)
    for column, value in equal.items():
        if value is not None:
            query = query.where(wn.c[column] == value)
    if not include_events:
        query = query.where(wn.c.channel.is_not(None))
    if before_id is not None:
        query = query.where(wn.c.id < before_id)
    return [dict(r) for r in conn.execute(query).mappings()]


def notification_by_id(conn: Connection, row_id: int, *, tenant_id: str | None) -> dict[str, Any] | None:
    """One row (in the tenant, unless ``tenant_id`` is None), or None."""
    query = sa.select(wn).where(wn.c.id == row_id)
    if tenant_id is not None:
        query = query.where(wn.c.tenant_id == tenant_id)
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


# --------------------------------------------------------------------------- channels
def insert_channel(conn: Connection, values: dict[str, Any]) -> int:
    """Insert a channel row; its id."""
    return int(conn.execute(nc.insert().values(**values).returning(nc.c.id)).scalar_one())


def channel_by_id(conn: Connection, channel_id: int, *, tenant_id: str | None) -> dict[str, Any] | None:
    """One channel row (in the tenant, unless ``tenant_id`` is None), or None."""
    query = sa.select(nc).where(nc.c.id == channel_id)
    if tenant_id is not None:
        query = query.where(nc.c.tenant_id == tenant_id)
    row = conn.execute(query).mappings().first()
    return None if row is None else dict(row)


def channel_rows(conn: Connection, *, tenant_id: str | None) -> list[dict[str, Any]]:
    """Every channel row of a tenant (all tenants when None), by id."""
    query = sa.select(nc).order_by(nc.c.id)
    if tenant_id is not None:
        query = query.where(nc.c.tenant_id == tenant_id)
    return [dict(r) for r in conn.execute(query).mappings()]


def enabled_channels(conn: Connection, *, tenant_id: str, workflow_code: str | None) -> list[dict[str, Any]]:
    """Enabled channels of the tenant for every workflow or for ``workflow_code``, by id."""
    rows = conn.execute(
        sa.select(nc).where(nc.c.tenant_id == tenant_id, nc.c.enabled.is_(True))
        .where(sa.or_(nc.c.workflow_code.is_(None), nc.c.workflow_code == workflow_code))
        .order_by(nc.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def update_channel_row(conn: Connection, channel_id: int, values: dict[str, Any]) -> None:
    conn.execute(nc.update().where(nc.c.id == channel_id).values(**values))


def delete_channel_row(conn: Connection, channel_id: int) -> None:
    conn.execute(nc.delete().where(nc.c.id == channel_id))


def cancel_pending_deliveries(conn: Connection, channel_id: int, reason: str) -> int:
    """Cancel what a channel still has pending (the log keeps the rows); how many."""
    result = conn.execute(wn.update().where(wn.c.channel_id == channel_id, wn.c.status == "pending")
                          .values(status="cancelled", error_message=reason, locked_by=None, locked_until=None))
    return int(result.rowcount or 0)


def webhook_configs(conn: Connection) -> list[tuple[int, dict[str, Any] | None]]:
    """``(id, config)`` of every webhook channel."""
    return [(int(r.id), r.config) for r in conn.execute(sa.select(nc.c.id, nc.c.config).where(nc.c.kind == "webhook"))]
