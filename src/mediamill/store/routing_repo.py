"""Routing rules of a tenant (ordered, enabled or not) and the review backlog they leave behind."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.errors import NotFound
from mediamill.store.tables import routing_rules as rr
from mediamill.store.tables import workflow_jobs as wj
from mediamill.store.timeutil import iso, utcnow

REVIEW_CODE = "WF-REVIEW"
REVIEW_QUEUE = "review"
FIELDS = ("name", "condition", "workflow", "version", "position", "enabled")


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A rule as the API shows it."""
    return {"id": row["id"], "name": row["name"] or f"rule-{row['id']}", "condition": row["condition"],
            "workflow": row["workflow_code"], "version": row["version"], "position": row["position"],
            "enabled": bool(row["enabled"]), "created_by": row["created_by"], "created_at": iso(row["created_at"]),
            "updated_at": iso(row["updated_at"])}


def list_rules(conn: Connection, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's rules in evaluation order."""
    q = sa.select(rr).where(rr.c.tenant_id == tenant_id).order_by(rr.c.position, rr.c.id)
    return [public(dict(r)) for r in conn.execute(q).mappings()]


def get_rule(conn: Connection, rule_id: int, tenant_id: str) -> dict[str, Any]:
    """One rule of the tenant (NotFound otherwise)."""
    row = conn.execute(sa.select(rr).where(rr.c.id == rule_id, rr.c.tenant_id == tenant_id)).mappings().first()
    if row is None:
        raise NotFound(f"no routing rule {rule_id}")
    return public(dict(row))


def create_rule(conn: Connection, tenant_id: str, values: dict[str, Any], *, by: str | None) -> dict[str, Any]:
    """Insert a rule; without a position it goes last."""
    position = values.get("position")
    if position is None:
        position = (conn.execute(sa.select(sa.func.max(rr.c.position)).where(rr.c.tenant_id == tenant_id))
                    .scalar() or 0) + 10
    now = utcnow()
    rule_id = conn.execute(rr.insert().values(
        tenant_id=tenant_id, name=values["name"], condition=values["condition"], workflow_code=values["workflow"],
        version=values.get("version"), position=position, enabled=values.get("enabled", True), created_by=by,
        created_at=now, updated_at=now).returning(rr.c.id)).scalar_one()
    return get_rule(conn, int(rule_id), tenant_id)


def update_rule(conn: Connection, rule_id: int, tenant_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change some fields of a rule (``workflow`` is stored as ``workflow_code``)."""
    get_rule(conn, rule_id, tenant_id)
    columns = {("workflow_code" if k == "workflow" else k): v for k, v in changes.items() if k in FIELDS}
    if columns:
        conn.execute(rr.update().where(rr.c.id == rule_id, rr.c.tenant_id == tenant_id)
                     .values(**columns, updated_at=utcnow()))
    return get_rule(conn, rule_id, tenant_id)


def delete_rule(conn: Connection, rule_id: int, tenant_id: str) -> None:
    """Delete one rule of the tenant."""
    res = conn.execute(rr.delete().where(rr.c.id == rule_id, rr.c.tenant_id == tenant_id))
    if res.rowcount == 0:
        raise NotFound(f"no routing rule {rule_id}")


def name_taken(conn: Connection, tenant_id: str, name: str, except_id: int | None = None) -> bool:
    """Does another rule of the tenant have this name?"""
    q = sa.select(rr.c.id).where(rr.c.tenant_id == tenant_id, rr.c.name == name)
    if except_id is not None:
        q = q.where(rr.c.id != except_id)
    return conn.execute(q).first() is not None


def find_rule(conn: Connection, tenant_id: str, ref: str) -> dict[str, Any]:
    """A rule by id or by name."""
    if ref.isdigit():
        return get_rule(conn, int(ref), tenant_id)
    row = conn.execute(sa.select(rr).where(rr.c.tenant_id == tenant_id, rr.c.name == ref)).mappings().first()
    if row is None:
        raise NotFound(f"no routing rule {ref!r}")
    return public(dict(row))


def review_backlog(conn: Connection, tenant_id: str | None = None) -> tuple[int, datetime | None]:
    """How many jobs wait in review, and since when the oldest has waited."""
    q = sa.select(sa.func.count(), sa.func.min(wj.c.submitted_at)).where(
        wj.c.status == "pending", wj.c.queue_name == REVIEW_QUEUE, wj.c.shadow_of.is_(None))
    if tenant_id is not None:
        q = q.where(wj.c.tenant_id == tenant_id)
    count, oldest = conn.execute(q).one()
    if isinstance(oldest, str):  # SQLite's MIN() of a timestamp can come back as text
        oldest = datetime.fromisoformat(oldest)
    return int(count or 0), oldest
