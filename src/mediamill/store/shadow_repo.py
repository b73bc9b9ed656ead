"""What a shadow report reads: the shadow rollout of a version, the (primary, shadow) job pairs it
made, and their outputs. The comparison itself is ``engine/shadow.py``'s."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import job_outputs as jo
from mediamill.store.tables import workflow_jobs as wj
from mediamill.store.tables import workflow_rollouts

#: The job columns each side of a pair carries.
PAIR_COLUMNS = (wj.c.id, wj.c.job_code, wj.c.workflow_version, wj.c.status, wj.c.error_class, wj.c.started_at,
                wj.c.completed_at, wj.c.finished_at)


def shadow_rollout(conn: Connection, workflow_id: int, tenant_id: str, version: int) -> dict[str, Any] | None:
    """The newest shadow rollout of ``version`` of the workflow in the tenant, or None."""
    row = conn.execute(sa.select(workflow_rollouts).where(
        workflow_rollouts.c.workflow_id == workflow_id, workflow_rollouts.c.tenant_id == tenant_id,
        workflow_rollouts.c.kind == "shadow", workflow_rollouts.c.version == version)
        .order_by(workflow_rollouts.c.id.desc())).mappings().first()
    return dict(row) if row else None


def shadow_pairs(conn: Connection, workflow_id: int, tenant_id: str, version: int,
                 limit: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(primary, shadow)`` jobs of the shadow runs of ``version``, newest first, at most ``limit``;
    each side a dict of ``PAIR_COLUMNS`` by name."""
    shadow = wj.alias("shadow")
    cols = PAIR_COLUMNS
    q = (sa.select(*cols, *(shadow.c[c.name].label(f"s_{c.name}") for c in cols))
         .select_from(shadow.join(wj, wj.c.id == shadow.c.shadow_of))
         .where(shadow.c.workflow_id == workflow_id, shadow.c.tenant_id == tenant_id,
                shadow.c.workflow_version == version)
         .order_by(shadow.c.id.desc()).limit(limit))
    rows = conn.execute(q).mappings().all()
    return [({c.name: r[c.name] for c in cols}, {c.name: r[f"s_{c.name}"] for c in cols}) for r in rows]


def outputs_by_job(conn: Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The outputs of each job in ``ids`` (name, step, type, size, storage key), in recorded order;
    every id has an entry, empty when it made nothing."""
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    for r in conn.execute(sa.select(jo.c.job_id, jo.c.name, jo.c.step_name, jo.c.mime_type, jo.c.bytes,
                                    jo.c.storage_key).where(jo.c.job_id.in_(ids)).order_by(jo.c.id)).mappings():
        out[r["job_id"]].append(dict(r))
    return out
