"""One liveness rule for workers, used by every reader (API, dashboard, metrics, alerts, CLI) and by the
housekeeping that marks and prunes dead workers: a worker is alive while its heartbeat is newer than the lease
(``lease_seconds``). That is the rule the rescue applies to its jobs, so a worker whose jobs were rescued never
still shows alive, and a killed worker shows dead after one lease, whatever its last ``status`` said."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.store.tables import workers

# statuses written by someone other than a live worker: said goodbye, or marked dead by the housekeeping
DEAD_STATUSES = ("stopped", "lost")


def cutoff(now: datetime, lease_seconds: float) -> datetime:
    """Heartbeats older than this are from dead workers."""
    return now - timedelta(seconds=lease_seconds)


def is_alive(status: str | None, heartbeat_at: datetime | None, now: datetime, lease_seconds: float) -> bool:
    return status not in DEAD_STATUSES and heartbeat_at is not None and heartbeat_at > cutoff(now, lease_seconds)


def alive_clause(now: datetime, lease_seconds: float) -> Any:
    """The same rule as a WHERE clause on ``workers``."""
    return sa.and_(workers.c.heartbeat_at > cutoff(now, lease_seconds), workers.c.status.notin_(DEAD_STATUSES))


def live_worker_pools(conn: Connection, now: datetime, lease_seconds: float) -> list[Any]:
    """The raw ``pools`` column of every live worker (a dict, a list or ``"a=1,b=2"`` text)."""
    return [pools for (pools,) in conn.execute(sa.select(workers.c.pools).where(alive_clause(now, lease_seconds)))]


def mark_lost(conn: Connection, now: datetime, lease_seconds: float) -> int:
    """Mark ``lost`` every worker not already dead whose heartbeat is older than the lease; how many."""
    w = workers
    return int(conn.execute(w.update().where(w.c.status.notin_(DEAD_STATUSES),
                                             w.c.heartbeat_at <= cutoff(now, lease_seconds))
                            .values(status="lost")).rowcount)


def prune_dead(conn: Connection, before: datetime) -> int:
    """Delete the rows of stopped or lost workers whose last heartbeat is older than ``before``; how many."""
    w = workers
    return int(conn.execute(w.delete().where(w.c.status.in_(DEAD_STATUSES), w.c.heartbeat_at < before)).rowcount)


def register_worker(conn: Connection, *, worker_id: str, hostname: str, pid: int, pools: dict[str, int],
                    version: str, now: datetime) -> None:
    """A worker's row, running from ``now``."""
    conn.execute(workers.insert().values(id=worker_id, hostname=hostname, pid=pid, pools=pools, status="running",
                                         started_at=now, heartbeat_at=now, jobs_done=0, version=version))


def mark_stopped(conn: Connection, worker_id: str, *, jobs_done: int, now: datetime) -> None:
    """A worker that stopped on its own (its last heartbeat ``now``)."""
    conn.execute(workers.update().where(workers.c.id == worker_id)
                 .values(status="stopped", heartbeat_at=now, jobs_done=jobs_done))
