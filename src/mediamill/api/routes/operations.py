"""Operating the engine over HTTP: queues, workers, dead letters, circuit breakers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import MAX_ID, ops, read_engine, runtime
from mediamill.api.models import (
    BreakerList,
    BreakerReset,
    Count,
    DeadLetterBulkRetry,
    DeadLetterRetry,
    Items,
    JobId,
    Ok,
    QueueList,
    WorkerList,
)
from mediamill.api.problems import PROBLEM_RESPONSES
from mediamill.errors import Forbidden

router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)
DL_ID = Path(..., ge=1, le=MAX_ID)
QUEUE_NAME = Path(..., pattern=r"^[a-z0-9][a-z0-9_\-]{0,49}$")


# ------------------------------------------------------------------------------ queues
@router.get("/queues", response_model=QueueList, tags=["queues"])
def list_queues(request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """The caller's queues (its workflows' and the shared ones): depth, waiting, processing, oldest
    wait — counting the tenant's own jobs — and paused. The ``default`` tenant sees every queue and job."""
    return {"items": ops().queue_stats(read_engine(request), tenant_id=caller.scope)}


@router.post("/queues/{name}/pause", response_model=Ok, tags=["queues"])
def pause_queue(request: Request, name: str = QUEUE_NAME, caller: Caller = auth.Operator) -> dict[str, Any]:
    """Stop workers from claiming this queue's jobs (running ones finish). A queue of the tenant's
    own workflows only: its operators; a shared queue (built-in workflows, several tenants): the root admin."""
    ops().pause_queue(runtime(request).engine, name, tenant_id=None if caller.is_root else caller.tenant_id)
    return {"ok": True}


@router.post("/queues/{name}/resume", response_model=Ok, tags=["queues"])
def resume_queue(request: Request, name: str = QUEUE_NAME, caller: Caller = auth.Operator) -> dict[str, Any]:
    """Let workers claim from this queue again (who may: as for pause)."""
    ops().resume_queue(runtime(request).engine, name, tenant_id=None if caller.is_root else caller.tenant_id)
    return {"ok": True}


# ------------------------------------------------------------------------------ workers
@router.get("/workers", response_model=WorkerList, tags=["workers"])
def list_workers(request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """Workers serving the caller's queues: those pools, last heartbeat, the tenant's running jobs
    (the ``default`` tenant: every worker with host, pid and jobs done)."""
    return {"items": ops().list_workers(read_engine(request), lease_seconds=runtime(request).settings.lease_seconds,
                                        tenant_id=caller.scope)}


# ------------------------------------------------------------------------------ dead letters
@router.get("/dead-letters", response_model=Items, tags=["dead letters"])
def list_dead_letters(request: Request, caller: Caller = auth.Viewer,
                      error_class: str | None = Query(None, max_length=30),
                      workflow: str | None = Query(None, max_length=50),
                      include_resolved: bool = False, limit: int = Query(50, ge=1, le=500),
                      before_id: int | None = Query(None, ge=1, le=MAX_ID)) -> dict[str, Any]:
    """Failed jobs set aside with their input and attempt history (newest first)."""
    items = ops().list_dead_letters(read_engine(request), tenant_id=caller.tenant_id, error_class=error_class,
                                    workflow=workflow, include_resolved=include_resolved, limit=limit,
                                    before_id=before_id)
    return {"items": items}


@router.post("/dead-letters/retry", response_model=Count, tags=["dead letters"])
def retry_dead_letters(body: DeadLetterBulkRetry, request: Request, caller: Caller = auth.Operator) -> dict[str, Any]:
    """Retry every open dead letter matching the filter (optionally on another workflow version)."""
    count = ops().retry_dead_letters(runtime(request).engine, error_class=body.error_class, workflow=body.workflow,
                                     version=body.version, tenant_id=caller.tenant_id, by=caller.label)
    return {"count": count}


@router.post("/dead-letters/{dl_id}/retry", response_model=JobId, tags=["dead letters"])
def retry_dead_letter(request: Request, body: DeadLetterRetry | None = None, dl_id: int = DL_ID,
                      caller: Caller = auth.Operator) -> dict[str, Any]:
    """Re-queue one dead-lettered job (on its own version unless ``version`` is given)."""
    job_id = ops().retry_dead_letter(runtime(request).engine, dl_id, version=body.version if body else None,
                                     tenant_id=caller.tenant_id, by=caller.label)
    return {"job_id": job_id}


@router.post("/dead-letters/{dl_id}/discard", response_model=Ok, tags=["dead letters"])
def discard_dead_letter(request: Request, dl_id: int = DL_ID, caller: Caller = auth.Operator) -> dict[str, Any]:
    """Resolve a dead letter without retrying it."""
    ops().discard_dead_letter(runtime(request).engine, dl_id, tenant_id=caller.tenant_id, by=caller.label)
    return {"ok": True}


# ------------------------------------------------------------------------------ breakers
@router.get("/breakers", response_model=BreakerList, tags=["breakers"])
def list_breakers(request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """Circuit breakers per action: state, counts, next probe. A breaker guards an action for every
    tenant: its last error (maybe another tenant's failure) is shown to the ``default`` tenant only."""
    items = ops().list_breakers(read_engine(request))
    if caller.scope is not None:
        items = [{**b, "last_error": None} for b in items]
    return {"items": items}


@router.post("/breakers/{action}/reset", response_model=BreakerReset, tags=["breakers"])
def reset_breaker(request: Request, action: str = Path(..., max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$"),
                  caller: Caller = auth.Admin) -> dict[str, Any]:
    """Close a breaker by hand (jobs waiting on it become claimable). Breakers are shared by every
    tenant: the root admin resets them."""
    if not caller.is_root:
        raise Forbidden("breakers are shared by every tenant: only the root admin resets one")
    ops().reset_breaker(runtime(request).engine, action)
    return {"ok": True, "action": action}
