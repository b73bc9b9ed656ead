"""The rows a submit writes: its jobs (one statement for a batch) and their queue entries, a canary's move
of a job to the candidate version, and the job an Idempotency-Key already created. (Their first events go
through ``store.lifecycle.add_events``, as every job event does.)

What is submitted — the workflow version, routing, the rollout's pick, a job's first status and queue —
is decided in ``engine/submit.py``, which builds the rows; this module only reads and writes them, in the
caller's transaction. The batch inserts are ``store.bulk``'s (a binary COPY, or ``INSERT … SELECT FROM
unnest`` when ids come back, on PostgreSQL; executemany elsewhere), so a group commit of any size costs the
same statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from mediamill.store.bulk import insert_many, insert_many_returning_ids
from mediamill.store.tables import media_queue, workflow_jobs

#: A row a constraint refused. A submit with an Idempotency-Key that meets one lost the race to a
#: concurrent submit with the same key (the unique ``(tenant_id, idempotency_key)``): it replays that job.
CONSTRAINT_ERRORS: tuple[type[Exception], ...] = (sa_exc.IntegrityError,)


def job_by_idempotency_key(conn: Connection, tenant_id: str, key: str) -> dict[str, Any] | None:
    """The tenant's job created with this Idempotency-Key (every ``workflow_jobs`` column), or None."""
    row = conn.execute(sa.select(workflow_jobs).where(workflow_jobs.c.tenant_id == tenant_id,
                                                      workflow_jobs.c.idempotency_key == key)).mappings().first()
    return None if row is None else dict(row)


def insert_jobs(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``workflow_jobs`` rows (dicts of column → value) in one statement; their new ids, in the
    rows' order."""
    return insert_many_returning_ids(conn, workflow_jobs, rows)


def move_to_version(conn: Connection, job_id: int, *, version: int, queue: str) -> None:
    """Point a just-inserted job at another version of its workflow and that version's queue."""
    conn.execute(workflow_jobs.update().where(workflow_jobs.c.id == job_id)
                 .values(workflow_version=version, queue_name=queue))


def enqueue_jobs(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``media_queue`` entries (dicts of column → value; a missing key is NULL, not the default)."""
    insert_many(conn, media_queue, rows)
