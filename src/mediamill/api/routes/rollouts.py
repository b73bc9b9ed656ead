"""Staged rollouts (canary) and shadow runs of a workflow's candidate version, over HTTP.

Both belong to the caller's tenant: they divert or mirror that tenant's new jobs only. Starting,
promoting and stopping need the right to change the workflow (operators; admins for shared ones).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import MAX_VERSION, read_engine, runtime
from mediamill.api.models import Loose
from mediamill.api.problems import PROBLEM_RESPONSES
from mediamill.api.routes.workflows import _visible, _writable
from mediamill.engine import rollouts, shadow

router = APIRouter(prefix="/v1/workflows", tags=["rollouts"], responses=PROBLEM_RESPONSES)
CODE = Path(..., pattern=r"^[A-Z0-9][A-Z0-9_\-]{1,49}$")


class GuardIn(BaseModel):
    """Abort by itself when the candidate fails more than the active version by ``max_failure_delta``
    (0.1 = ten points) once it has ``min_jobs`` finished jobs."""

    model_config = ConfigDict(extra="forbid")
    max_failure_delta: float = Field(default=0.10, ge=0, le=1)
    min_jobs: int = Field(default=20, ge=1, le=1_000_000)


class RolloutIn(BaseModel):
    """A staged rollout: ``percent`` of new jobs run ``version``."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=MAX_VERSION, description="the candidate")
    percent: float = Field(gt=0, le=100, description="share of new jobs that run the candidate")
    guard: GuardIn | None = None


class ShadowIn(BaseModel):
    """A shadow run: ``sample_percent`` of new jobs also run on ``version``."""

    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=MAX_VERSION, description="the candidate")
    sample_percent: float = Field(gt=0, le=100, description="share of new jobs also run on the candidate")


def _check(request: Request, caller: Caller, code: str, *, write: bool) -> None:
    with runtime(request).engine.connect() as conn:
        (_writable if write else _visible)(conn, caller, code)


# ------------------------------------------------------------------------------ canary
@router.post("/{code}/rollout", response_model=Loose)
def start_rollout(body: RolloutIn, request: Request, code: str = CODE, caller: Caller = auth.Operator) -> Any:
    """Send ``percent`` of new jobs (picked by job id) to ``version``; posting again changes the share."""
    _check(request, caller, code, write=True)
    return rollouts.start(runtime(request).engine, code, kind="canary", version=body.version, percent=body.percent,
                          tenant_id=caller.tenant_id, by=caller.label,
                          guard=body.guard.model_dump() if body.guard else None)


@router.get("/{code}/rollout", response_model=Loose)
def get_rollout(request: Request, code: str = CODE, caller: Caller = auth.Viewer) -> Any:
    """The active (else the last) rollout with live figures per version: jobs, failure rate, p50/p95."""
    _check(request, caller, code, write=False)
    return rollouts.status(read_engine(request), code, kind="canary", tenant_id=caller.tenant_id)


@router.post("/{code}/rollout/promote", response_model=Loose)
def promote_rollout(request: Request, code: str = CODE, caller: Caller = auth.Operator) -> Any:
    """Activate the candidate for every new job and end the rollout."""
    _check(request, caller, code, write=True)
    return rollouts.promote(runtime(request).engine, code, kind="canary", tenant_id=caller.tenant_id, by=caller.label)


@router.delete("/{code}/rollout", response_model=Loose)
def abort_rollout(request: Request, code: str = CODE, caller: Caller = auth.Operator) -> Any:
    """Abort: new jobs run the active version only (jobs already on the candidate finish on it)."""
    _check(request, caller, code, write=True)
    return rollouts.stop(runtime(request).engine, code, kind="canary", tenant_id=caller.tenant_id, by=caller.label,
                         reason="aborted by request")


# ------------------------------------------------------------------------------ shadow
@router.post("/{code}/shadow", response_model=Loose)
def start_shadow(body: ShadowIn, request: Request, code: str = CODE, caller: Caller = auth.Operator) -> Any:
    """Also run ``sample_percent`` of new jobs on ``version`` as separate, invisible shadow jobs."""
    _check(request, caller, code, write=True)
    return rollouts.start(runtime(request).engine, code, kind="shadow", version=body.version,
                          percent=body.sample_percent, tenant_id=caller.tenant_id, by=caller.label)


@router.get("/{code}/shadow", response_model=Loose)
def get_shadow(request: Request, code: str = CODE, caller: Caller = auth.Viewer) -> Any:
    """The active (else the last) shadow run with live figures of the primary jobs."""
    _check(request, caller, code, write=False)
    return rollouts.status(read_engine(request), code, kind="shadow", tenant_id=caller.tenant_id)


@router.delete("/{code}/shadow", response_model=Loose)
def stop_shadow(request: Request, code: str = CODE, caller: Caller = auth.Operator) -> Any:
    """Stop creating shadow jobs (those already created finish)."""
    _check(request, caller, code, write=True)
    return rollouts.stop(runtime(request).engine, code, kind="shadow", tenant_id=caller.tenant_id, by=caller.label)


@router.post("/{code}/shadow/promote", response_model=Loose)
def promote_shadow(request: Request, code: str = CODE, caller: Caller = auth.Operator) -> Any:
    """Activate the shadowed candidate and stop the shadow run."""
    _check(request, caller, code, write=True)
    return rollouts.promote(runtime(request).engine, code, kind="shadow", tenant_id=caller.tenant_id, by=caller.label)


@router.get("/{code}/shadow/report", response_model=Loose)
def shadow_report(request: Request, code: str = CODE, caller: Caller = auth.Viewer,
                  version: int | None = Query(None, ge=1, le=MAX_VERSION, description="default: the last shadow run"),
                  limit: int = Query(200, ge=1, le=1000, description="newest pairs compared")) -> Any:
    """Both versions over the shadowed pairs: runs, failures by class, p50/p95 duration, outputs and bytes
    per step, and per output pair a meaningful difference (image: dimensions, hash distance, SSIM;
    video/audio: duration, resolution, bitrate; text: similarity)."""
    _check(request, caller, code, write=False)
    rt = runtime(request)
    return shadow.report(read_engine(request), rt.storage, code, tenant_id=caller.tenant_id, version=version,
                         limit=limit)
