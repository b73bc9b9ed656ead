"""Queues and tenants: which tenants' workflows send jobs to which queue, which queues hold a
tenant's jobs, and a ``media_queue`` query narrowed to one tenant's jobs.

What a tenant may see or change of a queue is decided in ``engine/tenancy.py``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import media_queue as mq
from mediamill.store.tables import workflow_definitions as wd
from mediamill.store.tables import workflow_jobs as wj


def workflow_queue_tenants(conn: Connection) -> list[tuple[str | None, str | None]]:
    """Distinct ``(queue_name, tenant_id)`` of every workflow (a tenant None: a shared, built-in one)."""
    return [(name, tenant) for name, tenant in conn.execute(sa.select(wd.c.queue_name, wd.c.tenant_id).distinct())]


def queues_holding_jobs_of(conn: Connection, tenant_id: str) -> set[str]:
    """The (named) queues that hold at least one of the tenant's jobs."""
    holding = sa.select(mq.c.queue_name).join(wj, wj.c.id == mq.c.job_id).where(wj.c.tenant_id == tenant_id)
    return {n for n in conn.execute(holding.distinct()).scalars() if n}


def scoped_jobs(query: Any, tenant_id: str | None) -> Any:
    """Restrict a query over ``media_queue`` to one tenant's jobs (no-op for the root view)."""
    if tenant_id is None:
        return query
    return query.join(wj, wj.c.id == mq.c.job_id).where(wj.c.tenant_id == tenant_id)
