"""Sources and the files they took: the database side of watch folders and bucket intake.

Exactly-once intake rests on two rules written here:

* a file version (source, path, fingerprint) has one ``source_files`` row — the unique
  constraint makes a second sighting, by any process, a no-op;
* a row moves ``pending → claimed → submitted`` by guarded updates (``WHERE status = … AND
  claimed_by = me``), and the move to ``submitted`` commits with the job it created.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from mediamill.errors import SOURCE_MESSAGE, Conflict, NotFound
from mediamill.statuses import TERMINAL_JOB
from mediamill.store.tables import job_events, media_queue, source_files, sources, workflow_jobs
from mediamill.store.timeutil import utcnow

FILE_STATUSES = ("pending", "claimed", "submitted", "done", "failed", "skipped")


# ------------------------------------------------------------------------------ sources
def new_secret() -> str:
    """A fresh salt of a source's event secret (the secret itself is derived from it and the install key,
    so the database alone does not reveal it)."""
    return secrets.token_urlsafe(24)


def create_source(conn: Connection, *, tenant_id: str, name: str, kind: str, location: str,
                  config: dict[str, Any], enabled: bool) -> dict[str, Any]:
    now = utcnow()
    try:
        with conn.begin_nested():
            new_id = conn.execute(sources.insert().values(
                tenant_id=tenant_id, name=name, kind=kind, location=location, config=config, enabled=enabled,
                secret=new_secret(), created_at=now, updated_at=now).returning(sources.c.id)).scalar_one()
    except IntegrityError:
        raise Conflict(f"a source named {name!r} already exists") from None
    return get_source(conn, int(new_id), tenant_id=tenant_id)


def get_source(conn: Connection, source_id: int, *, tenant_id: str | None = None) -> dict[str, Any]:
    q = sa.select(sources).where(sources.c.id == source_id)
    if tenant_id is not None:
        q = q.where(sources.c.tenant_id == tenant_id)
    row = conn.execute(q).mappings().first()
    if row is None:
        raise NotFound(f"no source {source_id}")
    return dict(row)


def find_source(conn: Connection, ref: str, *, tenant_id: str | None) -> dict[str, Any]:
    """A source by id or by name (the CLI accepts both)."""
    if ref.isdigit():
        return get_source(conn, int(ref), tenant_id=tenant_id)
    q = sa.select(sources).where(sources.c.name == ref)
    if tenant_id is not None:
        q = q.where(sources.c.tenant_id == tenant_id)
    rows = conn.execute(q).mappings().all()
    if len(rows) != 1:
        raise NotFound(f"no source {ref!r}" if not rows else f"several sources are named {ref!r}: use the id")
    return dict(rows[0])


def list_sources(conn: Connection, *, tenant_id: str | None = None, enabled_only: bool = False) -> list[dict[str, Any]]:
    q = sa.select(sources).order_by(sources.c.id)
    if tenant_id is not None:
        q = q.where(sources.c.tenant_id == tenant_id)
    if enabled_only:
        q = q.where(sources.c.enabled.is_(True))
    return [dict(r) for r in conn.execute(q).mappings()]


def update_source(conn: Connection, source_id: int, *, tenant_id: str, values: dict[str, Any]) -> dict[str, Any]:
    get_source(conn, source_id, tenant_id=tenant_id)
    try:
        with conn.begin_nested():
            conn.execute(sources.update().where(sources.c.id == source_id)
                         .values(**values, updated_at=utcnow(), last_error=None))
    except IntegrityError:
        raise Conflict(f"a source named {values.get('name')!r} already exists") from None
    return get_source(conn, source_id, tenant_id=tenant_id)


def delete_source(conn: Connection, source_id: int, *, tenant_id: str) -> None:
    get_source(conn, source_id, tenant_id=tenant_id)
    conn.execute(source_files.delete().where(source_files.c.source_id == source_id))
    conn.execute(sources.delete().where(sources.c.id == source_id))


def rotate_secret(conn: Connection, source_id: int, *, tenant_id: str) -> dict[str, Any]:
    """A new salt, hence a new event secret; returns the changed row."""
    get_source(conn, source_id, tenant_id=tenant_id)
    conn.execute(sources.update().where(sources.c.id == source_id).values(secret=new_secret(), updated_at=utcnow()))
    return get_source(conn, source_id, tenant_id=tenant_id)


def set_state(conn: Connection, source_id: int, **values: Any) -> None:
    """Runner bookkeeping (last scan, error, waiting reason, high-water mark) without touching updated_at."""
    conn.execute(sources.update().where(sources.c.id == source_id).values(**values))


# ------------------------------------------------------------------------------ election
def acquire_lease(conn: Connection, source_id: int, owner: str, lease_seconds: float) -> bool:
    """Become (or stay) the one process running a source; True when this process holds it."""
    now = utcnow()
    result = conn.execute(sources.update().where(
        sources.c.id == source_id, sources.c.enabled.is_(True),
        sa.or_(sources.c.owner.is_(None), sources.c.owner == owner, sources.c.lease_expires_at < now))
        .values(owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds)))
    return result.rowcount == 1


def release_lease(conn: Connection, source_id: int, owner: str) -> None:
    conn.execute(sources.update().where(sources.c.id == source_id, sources.c.owner == owner)
                 .values(owner=None, lease_expires_at=None))


# ------------------------------------------------------------------------------ files
def record_files(conn: Connection, source: dict[str, Any], files: Sequence[dict[str, Any]], origin: str) -> int:
    """Remember file versions as ``pending`` (a version seen before, by anyone, is ignored); returns how many
    were new."""
    if not files:
        return 0
    now = utcnow()
    rows = [{"source_id": source["id"], "tenant_id": source["tenant_id"], "path": f["path"],
             "fingerprint": f["fingerprint"], "size": f.get("size"), "etag": f.get("etag"), "mtime": f.get("mtime"),
             "status": "pending", "origin": origin, "first_seen_at": now} for f in files]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(source_files).on_conflict_do_nothing(
        index_elements=["source_id", "path", "fingerprint"])
    return sum(max(conn.execute(stmt, [row]).rowcount, 0) for row in rows)


def known_versions(conn: Connection, source_id: int) -> set[tuple[str, str]]:
    """Every (path, fingerprint) the source has recorded (a scanner's memory after a restart)."""
    q = sa.select(source_files.c.path, source_files.c.fingerprint).where(source_files.c.source_id == source_id)
    return {(p, f) for p, f in conn.execute(q)}


def release_stale_claims(conn: Connection, source_id: int, owner: str, older_than: float) -> int:
    """Claims of another (dead or demoted) process go back to pending, so the file is not lost."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    stale = (source_files.c.source_id == source_id, source_files.c.status == "claimed",
             sa.or_(source_files.c.claimed_by.is_(None), source_files.c.claimed_by != owner),
             source_files.c.claimed_at < cutoff)
    return int(conn.execute(source_files.update().where(*stale)
                            .values(status="pending", claimed_by=None, claimed_at=None)).rowcount)


def has_stale_claims(conn: Connection, source_id: int, owner: str, older_than: float) -> bool:
    cutoff = utcnow() - timedelta(seconds=older_than)
    return conn.execute(sa.select(source_files.c.id).where(
        source_files.c.source_id == source_id, source_files.c.status == "claimed",
        sa.or_(source_files.c.claimed_by.is_(None), source_files.c.claimed_by != owner),
        source_files.c.claimed_at < cutoff).limit(1)).first() is not None


def pending_ids(conn: Connection, source_id: int, limit: int) -> list[int]:
    """Pending files, oldest first (a read: the claim itself is :func:`claim_pending`)."""
    return [r for (r,) in conn.execute(sa.select(source_files.c.id).where(
        source_files.c.source_id == source_id, source_files.c.status == "pending")
        .order_by(source_files.c.id).limit(limit))]


def claim_pending(conn: Connection, ids: Sequence[int], owner: str) -> list[dict[str, Any]]:
    """Claim pending files; each row is won by exactly one process (the others' guarded updates miss)."""
    won = []
    now = utcnow()
    for file_id in ids:
        res = conn.execute(source_files.update().where(source_files.c.id == file_id,
                                                       source_files.c.status == "pending")
                           .values(status="claimed", claimed_by=owner, claimed_at=now))
        if res.rowcount == 1:
            won.append(file_id)
    if not won:
        return []
    return [dict(r) for r in conn.execute(sa.select(source_files).where(source_files.c.id.in_(won))
                                          .order_by(source_files.c.id)).mappings()]


def mark_submitted(conn: Connection, file_id: int, owner: str, *, job_id: int, content_hash: str | None) -> bool:
    """Our claim becomes a job (in the job's transaction); False when the claim was lost meanwhile."""
    res = conn.execute(source_files.update().where(
        source_files.c.id == file_id, source_files.c.status == "claimed", source_files.c.claimed_by == owner)
        .values(status="submitted", job_id=job_id, content_hash=content_hash, taken_at=utcnow(), error=None))
    return res.rowcount == 1


def log_job_source(conn: Connection, *, job_id: int, tenant_id: str, data: dict[str, Any]) -> None:
    """A ``source`` entry in the job's event log: the file (and source) the job was made from."""
    conn.execute(job_events.insert().values(job_id=job_id, tenant_id=tenant_id, event_type="source",
                                            created_at=utcnow(), data=data))


def mark_skipped(conn: Connection, file_id: int, owner: str, error: str) -> bool:
    res = conn.execute(source_files.update().where(
        source_files.c.id == file_id, source_files.c.status == "claimed", source_files.c.claimed_by == owner)
        .values(status="skipped", error=error[:SOURCE_MESSAGE], finished_at=utcnow()))
    return res.rowcount == 1


def finished_files(conn: Connection, source_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """Submitted files whose job reached a terminal status (their after-action is due)."""
    q = (sa.select(source_files, workflow_jobs.c.status.label("job_status"))
         .select_from(source_files.join(workflow_jobs, workflow_jobs.c.id == source_files.c.job_id))
         .where(source_files.c.source_id == source_id, source_files.c.status == "submitted",
                workflow_jobs.c.status.in_(TERMINAL_JOB))
         .order_by(source_files.c.id).limit(limit))
    return [dict(r) for r in conn.execute(q).mappings()]


def mark_finished(conn: Connection, file_id: int, *, status: str, after_done: str, error: str | None = None) -> None:
    conn.execute(source_files.update().where(source_files.c.id == file_id, source_files.c.status == "submitted")
                 .values(status=status, after_done=after_done, error=error, finished_at=utcnow()))


def list_files(conn: Connection, source_id: int, *, status: str | None = None, before_id: int | None = None,
               limit: int = 50) -> list[dict[str, Any]]:
    q = sa.select(source_files).where(source_files.c.source_id == source_id)
    if status:
        q = q.where(source_files.c.status.in_(status.split(",")))
    if before_id is not None:
        q = q.where(source_files.c.id < before_id)
    return [dict(r) for r in conn.execute(q.order_by(source_files.c.id.desc()).limit(limit)).mappings()]


def file_counts(conn: Connection, source_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Files per status, per source."""
    if not source_ids:
        return {}
    q = (sa.select(source_files.c.source_id, source_files.c.status, sa.func.count())
         .where(source_files.c.source_id.in_(list(source_ids)))
         .group_by(source_files.c.source_id, source_files.c.status))
    out: dict[int, dict[str, int]] = {i: {} for i in source_ids}
    for sid, status, n in conn.execute(q):
        out[sid][status] = int(n)
    return out


def oldest_waiting(conn: Connection, source_id: int) -> datetime | None:
    """When the oldest file still waiting to be taken was first seen (the source's lag)."""
    return conn.execute(sa.select(sa.func.min(source_files.c.first_seen_at)).where(
        source_files.c.source_id == source_id, source_files.c.status.in_(("pending", "claimed")))).scalar()


def queue_depth(conn: Connection, queue_name: str | None, cap: int) -> int:
    """Jobs waiting in a queue (all queues when None), counted no further than ``cap``."""
    q = sa.select(media_queue.c.id).where(media_queue.c.status == "queued")
    if queue_name is not None:
        q = q.where(media_queue.c.queue_name == queue_name)
    return int(conn.execute(sa.select(sa.func.count()).select_from(q.limit(cap).subquery())).scalar_one())
