"""Who still needs a stored input: jobs, open dead letters and uploads share objects by key.

Jobs submitted with the same ``upload_id`` or ``storage_key`` share one stored object, so an
input may be deleted only when nothing refers to it any more. The check and the deletion run
in one transaction holding a per-key lock (a transaction-scoped advisory lock on PostgreSQL;
SQLite's write lock, which every transaction of the shared engine takes at BEGIN), and a submit
that reuses a key takes the same lock in shared mode and refuses a key nothing refers to: so a
submit and a prune of the same key never interleave, while submits of one key run side by side
(a spike of jobs on one upload is not serialized on its lock).
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import dead_letters, upload_sessions, workflow_jobs


def lock_input(conn: Connection, key: str, *, shared: bool = False) -> None:
    """Hold ``key`` until the transaction ends (PostgreSQL; SQLite transactions are serial already).

    Whoever may delete the object takes the lock alone; ``shared`` is for whoever only adds a
    reference (a submit), so that many submits of one key do not wait for each other.
    """
    if conn.dialect.name == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(b"input:" + key.encode()).digest()[:8], "big", signed=True)
        take = sa.func.pg_advisory_xact_lock_shared if shared else sa.func.pg_advisory_xact_lock
        conn.execute(sa.select(take(lock_id)))


def input_referenced(conn: Connection, key: str) -> bool:
    """True while a job, an open dead letter or an upload session names ``key``."""
    refs = sa.or_(
        sa.exists().where(workflow_jobs.c.input_key == key),
        sa.exists().where(upload_sessions.c.storage_key == key),
        sa.exists().where(dead_letters.c.input_key == key, dead_letters.c.resolved_at.is_(None)),
    )
    return bool(conn.execute(sa.select(refs)).scalar())
