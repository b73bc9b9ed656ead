"""Sources as a managed resource: create, change, show, delete, and bucket events — what the API, the CLI
and the dashboard call."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any

from pydantic import ValidationError

from mediamill import installkey
from mediamill.errors import Conflict, InvalidInput, MediamillError, NotFound, Unauthorized
from mediamill.sources.backends import BucketBackend
from mediamill.sources.models import SourcePatch, SourceSpec
from mediamill.sources.notifications import created_objects, subscription_url, verify
from mediamill.store import sources_repo, workflow_repo
from mediamill.store.db import Connection, Engine
from mediamill.store.timeutil import utcnow

log = logging.getLogger("mediamill.sources")


def _validated(data: dict[str, Any], error: type[MediamillError] = InvalidInput) -> SourceSpec:
    try:
        return SourceSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'source'}: {e['msg']}" for e in exc.errors()]
        raise error("invalid source: " + "; ".join(problems)) from None


def _check_workflow(conn: Connection, spec: SourceSpec, tenant_id: str) -> None:
    """The workflow exists for the tenant (its own, or a shared one; another tenant's does not exist: 404,
    as when a job names it)."""
    if spec.workflow in ("", "auto"):
        return
    exists, owner = workflow_repo.workflow_owner(conn, spec.workflow)
    if not exists or owner not in (None, tenant_id):
        raise NotFound(f"workflow: no workflow {spec.workflow!r}")


def event_secret(settings: Any, row: dict[str, Any]) -> str:
    """The secret bucket events of a source are signed with: derived from the install key, the source's id
    and its stored salt (rotating the salt rotates the secret)."""
    mac = hmac.new(installkey.derive(settings, "source-events"), f"{row['id']}:{row['secret']}".encode(),
                   hashlib.sha256).digest()
    return "srcsec_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")


def rotate(conn: Connection, settings: Any, source_id: int, *, tenant_id: str) -> str:
    """A new event secret (the old one stops working at once)."""
    return event_secret(settings, sources_repo.rotate_secret(conn, source_id, tenant_id=tenant_id))


def create(conn: Connection, settings: Any, *, tenant_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """Create a source; the answer is the only one that shows its event secret."""
    spec = _validated(data)
    _check_workflow(conn, spec, tenant_id)
    row = sources_repo.create_source(conn, tenant_id=tenant_id, name=spec.name, kind=spec.kind,
                                     location=spec.location, config=spec.config(), enabled=spec.enabled)
    return {**public_view(conn, row), "secret": event_secret(settings, row)}


def update(conn: Connection, source_id: int, *, tenant_id: str, patch: SourcePatch) -> dict[str, Any]:
    row = sources_repo.get_source(conn, source_id, tenant_id=tenant_id)
    current = SourceSpec.from_row(row).model_dump()
    changes = _changes(patch)
    spec = _validated({**current, **changes}, Conflict)  # each field is valid: only the combination can fail
    _check_workflow(conn, spec, tenant_id)
    row = sources_repo.update_source(conn, source_id, tenant_id=tenant_id, values={
        "name": spec.name, "location": spec.location, "config": spec.config(), "enabled": spec.enabled})
    return public_view(conn, row)


def _changes(patch: SourcePatch) -> dict[str, Any]:
    """The fields a patch sets; ``null`` puts a field back to its default (a name stays as it is)."""
    fields = SourceSpec.model_fields
    return {k: fields[k].get_default(call_default_factory=True) if v is None else v
            for k, v in patch.model_dump(exclude_unset=True).items() if v is not None or k != "name"}


def public_view(conn: Connection, row: dict[str, Any], counts: dict[str, int] | None = None) -> dict[str, Any]:
    """A source as the API shows it: its settings, who runs it, and how its files fared (no secret)."""
    spec = SourceSpec.from_row(row)
    if counts is None:
        counts = sources_repo.file_counts(conn, [row["id"]]).get(row["id"], {})
    oldest = sources_repo.oldest_waiting(conn, row["id"])
    return {
        "id": row["id"], **spec.model_dump(exclude_none=True),
        "events_path": f"/v1/sources/{row['id']}/events" if spec.kind == "bucket" else None,
        "owner": row["owner"], "lease_expires_at": _iso(row["lease_expires_at"]),
        "last_scan_at": _iso(row["last_scan_at"]), "last_error": row["last_error"],
        "waiting_reason": row["waiting_reason"], "high_water": row["high_water"],
        "files": {s: counts.get(s, 0) for s in sources_repo.FILE_STATUSES},
        "lag_seconds": round((utcnow() - oldest).total_seconds(), 3) if oldest else 0.0,
        "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"]),
    }


def list_views(conn: Connection, *, tenant_id: str | None) -> list[dict[str, Any]]:
    rows = sources_repo.list_sources(conn, tenant_id=tenant_id)
    counts = sources_repo.file_counts(conn, [r["id"] for r in rows])
    return [public_view(conn, r, counts.get(r["id"], {})) for r in rows]


def file_view(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) if k.endswith("_at") else v for k, v in row.items() if k not in ("tenant_id",)}


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value is not None else None


def record_event(engine: Engine, settings: Any, source_id: int, body: bytes, headers: Any) -> dict[str, Any]:
    """A signed bucket notification: its new objects become pending files of the source (taken by the
    process that runs it, exactly once like listed ones)."""
    try:
        with engine.connect() as conn:
            row = sources_repo.get_source(conn, source_id)
    except NotFound:  # the same answer as a bad signature: ids are not for probing
        raise Unauthorized("the event is not signed with this source's secret") from None
    verify(event_secret(settings, row), body, headers)  # before anything else is revealed about the source
    if row["kind"] != "bucket":
        raise InvalidInput("only bucket sources take bucket events")
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise InvalidInput("the body is not JSON") from None
    confirm = subscription_url(document)
    if confirm:
        log.warning("source %s: SNS asks to confirm its subscription: open %s", row["name"], confirm)
        return {"accepted": 0, "new": 0, "ignored": 0, "subscribe_url": confirm}
    backend = BucketBackend(SourceSpec.from_row(row))
    versions, ignored = created_objects(document, backend.bucket)
    wanted = [v for v in versions if backend.wanted(v.path)]
    with engine.begin() as conn:
        new = sources_repo.record_files(conn, row, [v.as_row() for v in wanted], "event")
    return {"accepted": len(wanted), "new": new, "ignored": ignored + len(versions) - len(wanted)}
