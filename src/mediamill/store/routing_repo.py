"""Routing rules of a tenant (ordered, enabled or not), the workflows a tenant may be routed to, and
the review queue: the jobs waiting there, their way out, and the backlog they make."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.errors import NotFound
from mediamill.store.job_rows import CLAIM_FIELDS, enqueue
from mediamill.store.tables import routing_rules as rr
from mediamill.store.tables import workflow_definitions as wd
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


def tenant_rules(conn: Connection, tenant_id: str, *, enabled_only: bool = True) -> list[dict[str, Any]]:
    """The rules that apply to the tenant (its own and those without a tenant), in evaluation order,
    as rows."""
    q = sa.select(rr).where(sa.or_(rr.c.tenant_id.is_(None), rr.c.tenant_id == tenant_id))
    if enabled_only:
        q = q.where(rr.c.enabled.is_(True))
    return [dict(r) for r in conn.execute(q.order_by(rr.c.position, rr.c.id)).mappings()]


def visible_workflows(conn: Connection, tenant_id: str) -> list[str]:
    """Active workflow codes the tenant may run (its own and the shared ones), review excluded, by code."""
    q = (sa.select(wd.c.workflow_code).where(wd.c.is_active.is_(True), wd.c.workflow_code != REVIEW_CODE,
                                             sa.or_(wd.c.tenant_id.is_(None), wd.c.tenant_id == tenant_id))
         .order_by(wd.c.workflow_code))
    return list(conn.execute(q).scalars())


def job_for_review(conn: Connection, job_id: int, tenant_id: str | None) -> dict[str, Any] | None:
    """The job dict (``CLAIM_FIELDS``) with its ``status`` and ``routing``, in the tenant unless
    ``tenant_id`` is None; None when there is no such job."""
    q = sa.select(*CLAIM_FIELDS, wj.c.status, wj.c.routing).where(wj.c.id == job_id)
    if tenant_id is not None:
        q = q.where(wj.c.tenant_id == tenant_id)
    job = conn.execute(q).mappings().first()
    return None if job is None else dict(job)


def route_out_of_review(conn: Connection, job: dict[str, Any], *, workflow_id: int, version: int, queue: str,
                        routing: dict[str, Any], now: datetime) -> bool:
    """Move a job still waiting in review to ``workflow_id`` at ``version`` and queue it in ``queue``.

    False (and nothing written) when the job no longer waits in review.
    """
    res = conn.execute(wj.update().where(wj.c.id == job["id"], wj.c.status == "pending",
                                         wj.c.queue_name == REVIEW_QUEUE)
                       .values(workflow_id=workflow_id, workflow_version=version, queue_name=queue,
                               status="queued", routing=routing, updated_at=now))
    if res.rowcount != 1:
        return False
    enqueue(conn, job["id"], queue=queue, priority=job["priority"], now=now)
    return True
