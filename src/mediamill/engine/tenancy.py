"""What a tenant sees of the shared machinery: queues, workers, their figures.

Queues and workers serve every tenant; jobs belong to one. The model (docs/tenancy.md):

* a queue is **owned** by a tenant when every workflow that sends jobs to it is that tenant's
  own; it is **shared** when a built-in (tenant-less) workflow or two tenants' workflows use it;
* a tenant sees the queues its visible workflows (its own and the shared ones) use, and every
  figure counts its own jobs only;
* the ``default`` tenant runs the install: it sees every queue, worker and figure;
* pausing or resuming a queue is for the tenant's operators when the tenant owns it, and for
  the root admin (an admin of the ``default`` tenant) when it is shared; a queue the tenant
  cannot see answers 404, like any other tenant's resource.

Every function takes ``tenant_id``: ``None`` means the install-wide view.
"""

from __future__ import annotations

from typing import Any

from mediamill.errors import Forbidden, NotFound
from mediamill.store import queue_scope
from mediamill.store.db import Connection

__all__ = ["check_may_pause", "queue_owners", "visible_queues", "worker_view"]


def queue_owners(conn: Connection) -> dict[str, set[str | None]]:
    """Queue name → the tenants whose workflows use it (``None`` for a shared, built-in workflow)."""
    owners: dict[str, set[str | None]] = {}
    for name, tenant in queue_scope.workflow_queue_tenants(conn):
        if name:
            owners.setdefault(name, set()).add(tenant)
    return owners


def visible_queues(conn: Connection, tenant_id: str) -> set[str]:
    """The queues a tenant's visible workflows use, and any queue holding one of its jobs."""
    names = {name for name, tenants in queue_owners(conn).items() if tenants & {None, tenant_id}}
    names |= queue_scope.queues_holding_jobs_of(conn, tenant_id)
    return names


def check_may_pause(conn: Connection, name: str, *, tenant_id: str, root: bool) -> None:
    """Raise unless the caller may pause or resume queue ``name`` (see the module docstring)."""
    if root:
        return
    tenants = queue_owners(conn).get(name, set())
    if tenant_id not in tenants and name not in visible_queues(conn, tenant_id):
        raise NotFound(f"no queue {name!r}")
    if tenants != {tenant_id}:
        raise Forbidden(f"queue {name} is shared (built-in workflows or other tenants use it): "
                        "only the root admin pauses or resumes it")


def worker_view(row: dict[str, Any], visible: set[str] | None) -> dict[str, Any] | None:
    """A worker as a tenant sees it: only if it serves one of the tenant's queues, with those pools
    only and no install-wide figures or host details. ``visible`` None = the root view."""
    if visible is None:
        return row
    pools = row.get("pools") or {}
    mine = {q: n for q, n in pools.items() if q == "*" or q in visible} if isinstance(pools, dict) else {}
    if not mine:
        return None
    return {**row, "pools": mine, "jobs_done": None, "hostname": None, "pid": None}
