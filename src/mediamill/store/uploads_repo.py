"""Resumable upload sessions (tus) and presigned direct uploads.

A session's bytes are kept where every API replica sees them while the upload is in progress
(``part_state`` says where: S3 multipart parts or a part file in the shared uploads folder, see
``mediamill.api.tusparts``); when the last byte arrives they become an object in storage under a
server-generated key and the session is complete. ``upload_offset`` and ``part_state`` change
together, only under the upload's PATCH claim. A presigned session already names its storage
key; it completes when the object exists. Either way a complete session becomes a job input by its id.
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
                   storage_key: str | None = None, upload_id: str | None = None,
                   part_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open a session (``length`` None = deferred, tus creation-defer-length)."""
    now = utcnow()
    row = {"id": upload_id or new_upload_id(), "part_state": part_state,
           "tenant_id": tenant_id, "upload_length": length, "upload_offset": 0,
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


def claim_patch(engine: Engine, upload_id: str, *, tenant_id: str, offset: int | None,
                length: int | None = None, lease_seconds: float) -> tuple[str, dict[str, Any]]:
    """Make this request the only writer of an upload, in every API process: returns a claim
    token and the session.

    The row is locked for the check (``FOR UPDATE`` on PostgreSQL; the shared SQLite engine
    begins every transaction IMMEDIATE, which holds the database's write lock), so two
    requests cannot both see the upload unclaimed. Conflict when another request holds an
    unexpired claim, when ``offset`` (if given) is not the upload's offset, or when ``length``
    contradicts what is stored (a deferred length below the bytes already received, or a
    second, different length). Nothing changes on a Conflict. The length is saved with the claim.
    """
    now = utcnow()
    with engine.begin() as conn:
        row = conn.execute(sa.select(us).where(us.c.id == upload_id, us.c.tenant_id == tenant_id)
                           .with_for_update()).mappings().first()
        if row is None:
            raise NotFound(f"no upload {upload_id!r}")
        session = dict(row)
        _check_claimable(session, now, offset, length)
        token = secrets.token_hex(16)
        values: dict[str, Any] = {"patch_token": token, "patch_until": now + timedelta(seconds=lease_seconds)}
        if length is not None and session["upload_length"] is None:
            values["upload_length"] = session["upload_length"] = length
        conn.execute(us.update().where(us.c.id == upload_id).values(**values))
    return token, session


def _check_claimable(session: dict[str, Any], now: datetime, offset: int | None, length: int | None) -> None:
    if session["patch_token"] is not None and session["patch_until"] is not None and session["patch_until"] > now:
        raise Conflict("another request is writing this upload; retry after it ends (HEAD gives the offset)")
    if session["completed_at"] is not None:
        raise Conflict("the upload is complete")
    current = session["upload_offset"]
    if offset is not None and offset != current:
        raise Conflict(f"the upload is at offset {current}, not {offset}")
    stored = session["upload_length"]
    if length is not None and stored is not None and length != stored:
        raise Conflict(f"Upload-Length is already {stored}; it cannot change")
    if length is not None and length < current:
        raise Conflict(f"Upload-Length {length} is below the {current} bytes already received")


def extend_patch(engine: Engine, upload_id: str, token: str, lease_seconds: float) -> bool:
    """Keep a claim while its bytes still flow (False when it was lost)."""
    with engine.begin() as conn:
        res = conn.execute(us.update().where(us.c.id == upload_id, us.c.patch_token == token)
                           .values(patch_until=utcnow() + timedelta(seconds=lease_seconds)))
    return res.rowcount == 1


def release_patch(engine: Engine, upload_id: str, token: str, *, old: int, new: int, keep: bool = False,
                  part_state: dict[str, Any] | None = None) -> None:
    """Move the offset from ``old`` to ``new`` (with the ``part_state`` saying where the bytes now
    are) and end the claim (``keep``: hold it on, to finish the upload); Conflict when the claim
    was lost (its lease ran out and another request took it)."""
    values: dict[str, Any] = {"upload_offset": new}
    if part_state is not None:
        values["part_state"] = part_state
    if not keep:
        values.update(patch_token=None, patch_until=None)
    with engine.begin() as conn:
        res = conn.execute(us.update().where(us.c.id == upload_id, us.c.patch_token == token,
                                             us.c.upload_offset == old).values(**values))
    if res.rowcount != 1:
        raise Conflict("the upload changed under this request")


def end_patch(engine: Engine, upload_id: str, token: str) -> None:
    """Drop a claim without touching the offset (a refused or finished PATCH)."""
    with engine.begin() as conn:
        conn.execute(us.update().where(us.c.id == upload_id, us.c.patch_token == token)
                     .values(patch_token=None, patch_until=None))


def complete(engine: Engine, upload_id: str, *, storage_key: str, size: int,
             facts: dict[str, Any]) -> None:
    """Record that the bytes are in storage (``facts``: sniffed mime, sha256 …)."""
    with engine.begin() as conn:
        meta = conn.execute(sa.select(us.c.metadata).where(us.c.id == upload_id)).scalar() or {}
        conn.execute(us.update().where(us.c.id == upload_id).values(
            storage_key=storage_key, upload_offset=size, upload_length=size, completed_at=utcnow(), part_state=None,
            metadata={**meta, "_server": facts}))


def attach_job(engine: Engine, upload_id: str, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(us.update().where(us.c.id == upload_id, us.c.job_id.is_(None)).values(job_id=job_id))


def delete_session(engine: Engine, upload_id: str) -> None:
    with engine.begin() as conn:
        delete_session_conn(conn, upload_id)


def delete_session_conn(conn: Connection, upload_id: str) -> None:
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
