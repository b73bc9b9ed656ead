"""Resumable upload sessions (tus) and presigned direct uploads.

A session's bytes are appended to a part file while the upload is in progress; when the last
byte arrives the part file goes to storage under a server-generated key and the session is
complete. A presigned session already names its storage key; it completes when the object
exists. Either way a complete session becomes a job input by its id.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mediamill.errors import Conflict, NotFound
from mediamill.store.tables import upload_sessions as us
from mediamill.store.timeutil import utcnow


def new_upload_id() -> str:
    return secrets.token_hex(16)


def create_session(engine: Engine, *, tenant_id: str, length: int | None, metadata: dict[str, Any],
                   filename: str | None, created_by: str | None, expires_in: float,
                   storage_key: str | None = None) -> dict[str, Any]:
    """Open a session (``length`` None = deferred, tus creation-defer-length)."""
    now = utcnow()
    row = {"id": new_upload_id(), "tenant_id": tenant_id, "upload_length": length, "upload_offset": 0,
           "metadata": metadata, "filename": filename, "created_by": created_by, "created_at": now,
           "expires_at": now + timedelta(seconds=expires_in), "storage_key": storage_key}
    with engine.begin() as conn:
        conn.execute(us.insert().values(**row))
    return row


def get_session(conn: Connection, upload_id: str, *, tenant_id: str | None) -> dict[str, Any]:
    """A session of the tenant (NotFound otherwise, also for another tenant's session)."""
    cond = us.c.id == upload_id
    if tenant_id is not None:
        cond = cond & (us.c.tenant_id == tenant_id)
    row = conn.execute(sa.select(us).where(cond)).mappings().first()
    if row is None:
        raise NotFound(f"no upload {upload_id!r}")
    return dict(row)


def is_expired(session: dict[str, Any], now: datetime | None = None) -> bool:
    return (session["completed_at"] is None and session["expires_at"] is not None
            and session["expires_at"] < (now or utcnow()))


def set_length(engine: Engine, upload_id: str, length: int) -> None:
    with engine.begin() as conn:
        conn.execute(us.update().where(us.c.id == upload_id, us.c.upload_length.is_(None))
                     .values(upload_length=length))


def advance_offset(engine: Engine, upload_id: str, old: int, new: int) -> None:
    """Move the offset from ``old`` to ``new``; Conflict when another request moved it first."""
    with engine.begin() as conn:
        res = conn.execute(us.update().where(us.c.id == upload_id, us.c.upload_offset == old)
                           .values(upload_offset=new))
    if res.rowcount != 1:
        raise Conflict("the upload offset changed under this request")


def complete(engine: Engine, upload_id: str, *, storage_key: str, size: int,
             facts: dict[str, Any]) -> None:
    """Record that the bytes are in storage (``facts``: sniffed mime, sha256 …)."""
    with engine.begin() as conn:
        meta = conn.execute(sa.select(us.c.metadata).where(us.c.id == upload_id)).scalar() or {}
        conn.execute(us.update().where(us.c.id == upload_id).values(
            storage_key=storage_key, upload_offset=size, upload_length=size, completed_at=utcnow(),
            metadata={**meta, "_server": facts}))


def attach_job(engine: Engine, upload_id: str, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(us.update().where(us.c.id == upload_id, us.c.job_id.is_(None)).values(job_id=job_id))


def delete_session(engine: Engine, upload_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(us.delete().where(us.c.id == upload_id))


def expired_sessions(conn: Connection, *, limit: int = 500) -> list[dict[str, Any]]:
    """Incomplete sessions past their expiry (for the cleaner)."""
    q = (sa.select(us).where(us.c.completed_at.is_(None), us.c.expires_at < utcnow())
         .order_by(us.c.expires_at).limit(limit))
    return [dict(r) for r in conn.execute(q).mappings()]


def client_metadata(session: dict[str, Any]) -> dict[str, Any]:
    """The client's tus metadata without the server's own facts."""
    return {k: v for k, v in (session.get("metadata") or {}).items() if k != "_server"}


def server_facts(session: dict[str, Any]) -> dict[str, Any]:
    return dict((session.get("metadata") or {}).get("_server") or {})
