"""Per-tenant settings kept on the ``tenants`` row: where per-job deliveries may write."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import tenants
from mediamill.store.timeutil import utcnow


def deliver_prefixes(conn: Connection, tenant_id: str) -> list[str]:
    """Folder paths and ``s3://`` prefixes a job of this tenant may name in its ``deliver`` override."""
    value = conn.execute(sa.select(tenants.c.deliver_prefixes).where(tenants.c.id == tenant_id)).scalar()
    return [str(p) for p in value or []]


def set_deliver_prefixes(conn: Connection, tenant_id: str, prefixes: list[str]) -> list[str]:
    """Replace the tenant's allow-list (the tenant row is created when missing)."""
    if conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)).first() is None:
        conn.execute(tenants.insert().values(id=tenant_id, name=tenant_id, created_at=utcnow()))
    clean = sorted({p.strip() for p in prefixes if p.strip()})
    conn.execute(tenants.update().where(tenants.c.id == tenant_id).values(deliver_prefixes=clean))
    return clean
