"""Sources: folders and buckets whose new files become jobs; and the bucket event endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import MAX_ID, blocking, runtime
from mediamill.sources import service
from mediamill.sources.models import SourcePatch, SourceSpec
from mediamill.store import sources_repo

router = APIRouter(prefix="/v1/sources", tags=["sources"])
SOURCE_ID = Path(..., ge=1, le=MAX_ID)


@router.get("")
def list_sources(request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """The tenant's sources with their state: who runs each, last scan, waiting reason, files by status, lag."""
    with runtime(request).engine.connect() as conn:
        return {"items": service.list_views(conn, tenant_id=caller.tenant_id)}


@router.post("", status_code=201)
def create_source(request: Request, body: SourceSpec = Body(...), caller: Caller = auth.Operator) -> dict[str, Any]:
    """Create a source. A bucket source's answer carries its event ``secret`` (shown only here and on rotation)."""
    with runtime(request).engine.begin() as conn:
        return service.create(conn, runtime(request).settings, tenant_id=caller.tenant_id,
                              data=body.model_dump(exclude_unset=True))


@router.get("/{source_id}")
def get_source(request: Request, source_id: int = SOURCE_ID, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """One source and its state."""
    with runtime(request).engine.connect() as conn:
        return service.public_view(conn, sources_repo.get_source(conn, source_id, tenant_id=caller.tenant_id))


@router.patch("/{source_id}")
def update_source(request: Request, body: SourcePatch, source_id: int = SOURCE_ID,
                  caller: Caller = auth.Operator) -> dict[str, Any]:
    """Change a source (``{"enabled": false}`` pauses it); the process running it restarts it with the change."""
    with runtime(request).engine.begin() as conn:
        return service.update(conn, source_id, tenant_id=caller.tenant_id, patch=body)


@router.delete("/{source_id}", status_code=204)
def delete_source(request: Request, source_id: int = SOURCE_ID, caller: Caller = auth.Operator) -> Response:
    """Delete a source and its file log (jobs it created stay)."""
    with runtime(request).engine.begin() as conn:
        sources_repo.delete_source(conn, source_id, tenant_id=caller.tenant_id)
    return Response(status_code=204)


@router.get("/{source_id}/files")
def list_files(request: Request, source_id: int = SOURCE_ID, caller: Caller = auth.Viewer,
               status: str | None = Query(None, max_length=80,
                                          description="pending, claimed, submitted, done, failed, skipped"),
               before: int | None = Query(None, ge=1, le=MAX_ID), limit: int = Query(50, ge=1, le=500)
               ) -> dict[str, Any]:
    """What the source took, newest first, with each file's job and outcome; page with ``before``."""
    with runtime(request).engine.connect() as conn:
        sources_repo.get_source(conn, source_id, tenant_id=caller.tenant_id)
        rows = sources_repo.list_files(conn, source_id, status=status, before_id=before, limit=limit)
    return {"items": [service.file_view(r) for r in rows],
            "next_before": rows[-1]["id"] if len(rows) == limit else None}


@router.post("/{source_id}/rotate-secret")
def rotate_secret(request: Request, source_id: int = SOURCE_ID, caller: Caller = auth.Operator) -> dict[str, str]:
    """A new event secret (the old one stops working at once)."""
    with runtime(request).engine.begin() as conn:
        return {"secret": service.rotate(conn, runtime(request).settings, source_id, tenant_id=caller.tenant_id)}


@router.post("/{source_id}/events", status_code=202, openapi_extra={"security": []})
async def bucket_events(request: Request, source_id: int = SOURCE_ID) -> dict[str, Any]:
    """S3 / MinIO bucket notifications (``{"Records": [...]}``) for a bucket source.

    Authenticated by the source's secret, not an API key: ``Authorization: Bearer <secret>`` (MinIO's
    webhook ``auth_token``) or ``X-Mediamill-Signature: sha256=<HMAC-SHA256 of the body>``. New objects
    become jobs like listed ones (exactly once, whichever way they were seen first)."""
    body = await request.body()
    rt = runtime(request)
    result: dict[str, Any] = await blocking(service.record_event, rt.engine, rt.settings, source_id, body,
                                            request.headers)
    return result
