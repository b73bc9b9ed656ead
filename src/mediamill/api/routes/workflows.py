"""Workflow definitions over HTTP: list, get, create, update (a new version), versions, diff,
activate (rollback), deactivate, validate (dry run).

Documents are YAML (``application/yaml``, ``text/yaml``, ``text/plain``) or JSON. Built-in
workflows (no tenant) are visible to everyone and changed by admins only; a tenant's own
workflows are invisible to other tenants (404).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import MAX_VERSION, read_engine, runtime
from mediamill.api.models import (
    ActivateRequest,
    WorkflowActivation,
    WorkflowDiff,
    WorkflowList,
    WorkflowOut,
    WorkflowSaved,
    WorkflowValidation,
    WorkflowVersionList,
)
from mediamill.api.problems import PROBLEM_RESPONSES, MethodNotAllowed
from mediamill.engine.routing import ambiguity_warnings
from mediamill.errors import Conflict, Forbidden, InvalidField, NotFound, WorkflowInvalid
from mediamill.store import workflow_repo
from mediamill.store.db import Connection
from mediamill.store.timeutil import iso
from mediamill.workflows.loader import parse_workflow, validate_document
from mediamill.workflows.models import WorkflowDef

router = APIRouter(prefix="/v1/workflows", tags=["workflows"], responses=PROBLEM_RESPONSES)
CODE = Path(..., pattern=r"^[A-Z0-9][A-Z0-9_\-]{1,49}$")
DOC_BODY = {"requestBody": {"required": True, "content": {
    "application/yaml": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
}}}


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"code": row["workflow_code"], "name": row["workflow_name"], "type": row["workflow_type"],
            "queue": row["queue_name"], "priority": row["default_priority"], "active": bool(row["is_active"]),
            "current_version": row["current_version"], "versions": row["versions"],
            "updated_at": iso(row["updated_at"])}


def _visible(conn: Connection, caller: Caller, code: str) -> None:
    exists, tenant = workflow_repo.workflow_owner(conn, code)
    if not exists or (tenant is not None and tenant != caller.tenant_id):
        raise NotFound(f"no workflow {code!r}")


def _writable(conn: Connection, caller: Caller, code: str) -> None:
    _visible(conn, caller, code)
    _exists, tenant = workflow_repo.workflow_owner(conn, code)
    if tenant is None and not caller.can("admin"):
        raise Forbidden(f"{code} is shared by every tenant; only an admin changes it")


async def _document(request: Request) -> WorkflowDef:
    raw = await request.body()
    if not raw.strip():  # a missing body is a bad request, not an invalid workflow
        raise InvalidField("body", "send a workflow document (YAML or JSON)")
    ctype = request.headers.get("content-type", "")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WorkflowInvalid(["(document): not UTF-8 text"]) from None
    if ctype.startswith("application/json"):
        try:
            return validate_document(json.loads(text))
        except ValueError as exc:
            raise WorkflowInvalid([f"(document): invalid JSON: {exc}"]) from None
    return parse_workflow(text)


@router.get("", response_model=WorkflowList)
def list_workflows(request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """Every workflow the caller can see, with its current version."""
    with read_engine(request).connect() as conn:
        owners = workflow_repo.workflow_owners(conn)
        rows = workflow_repo.list_workflows(conn)
    return {"items": [_summary(r) for r in rows if owners.get(r["workflow_code"]) in (None, caller.tenant_id)]}


@router.api_route("/validate", methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False)
def validate_other_methods() -> None:
    """``/validate`` is not a workflow code: other methods are 405 (not a 422 for the code's pattern)."""
    raise MethodNotAllowed("POST")


@router.post("/validate", response_model=WorkflowValidation, openapi_extra=DOC_BODY)
async def validate(request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """Dry run: validate a document without saving it; ``problems`` are located messages."""
    try:
        wf = await _document(request)
    except WorkflowInvalid as exc:
        return {"valid": False, "problems": exc.problems}
    return {"valid": True, "problems": [], "code": wf.code, "steps": len(wf.steps), "checksum": wf.checksum()}


@router.post("", status_code=201, response_model=WorkflowSaved, openapi_extra=DOC_BODY)
async def create_workflow(request: Request, caller: Caller = auth.Operator,
                          comment: str | None = Query(None, max_length=500),
                          shared: bool = Query(False, description="admins: visible to every tenant")) -> JSONResponse:
    """Create a workflow (version 1). A code the caller can see is ``409``: update it with PUT.

    Codes are one namespace for the install; a code another tenant holds answers exactly like
    ``GET /v1/workflows/{code}`` does (404), so this route never confirms another tenant's workflow."""
    wf = await _document(request)
    if shared and not caller.can("admin"):
        raise Forbidden("only an admin creates shared workflows")
    with runtime(request).engine.begin() as conn:
        exists, tenant = workflow_repo.workflow_owner(conn, wf.code)
        if exists and tenant is not None and tenant != caller.tenant_id:
            raise NotFound(f"no workflow {wf.code!r}")
        if exists:
            raise Conflict(f"workflow {wf.code} exists; PUT /v1/workflows/{wf.code} saves a new version")
        saved = workflow_repo.save_version(conn, wf, source=None, author=caller.label,
                                           tenant_id=None if shared else caller.tenant_id, comment=comment)
        warnings = ambiguity_warnings(conn, wf.code, caller.tenant_id)
    return JSONResponse(_saved(saved, warnings), status_code=201)


def _saved(saved: workflow_repo.SavedVersion, warnings: list[str]) -> dict[str, Any]:
    """The saved version, and what it changed for routing (a type now accepted by several workflows)."""
    return {"code": saved.code, "version": saved.version, "created": saved.created, "active": saved.active,
            "warnings": warnings}


@router.put("/{code}", response_model=WorkflowSaved, openapi_extra=DOC_BODY)
async def update_workflow(request: Request, code: str = CODE, caller: Caller = auth.Operator,
                          comment: str | None = Query(None, max_length=500),
                          activate: bool = Query(True, description="make the new version current")) -> dict[str, Any]:
    """Save a new immutable version (identical content reuses the existing version)."""
    wf = await _document(request)
    if wf.code != code:
        raise WorkflowInvalid([f"code: the document says {wf.code!r}, the URL says {code!r}"])
    with runtime(request).engine.begin() as conn:
        _writable(conn, caller, code)
        saved = workflow_repo.save_version(conn, wf, author=caller.label, activate=activate, comment=comment)
        warnings = ambiguity_warnings(conn, code, caller.tenant_id) if saved.active else []
    return _saved(saved, warnings)


@router.get("/{code}", response_model=WorkflowOut)
def get_workflow(request: Request, code: str = CODE, caller: Caller = auth.Viewer,
                 version: int | None = Query(None, ge=1, le=MAX_VERSION)) -> dict[str, Any]:
    """One workflow's definition (the current version, or ``?version=N``)."""
    with read_engine(request).connect() as conn:
        _visible(conn, caller, code)
        got = workflow_repo.get_workflow(conn, code, version)
    return {"code": code, "version": got.version, "current_version": got.current_version,
            "active": got.is_active, "definition": got.definition.model_dump(mode="json", exclude_none=True)}


@router.get("/{code}/versions", response_model=WorkflowVersionList)
def list_versions(request: Request, code: str = CODE, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """Every version: number, checksum, author, time, whether it is the current one."""
    with read_engine(request).connect() as conn:
        _visible(conn, caller, code)
        rows = workflow_repo.list_versions(conn, code)
    return {"items": [{**r, "created_at": iso(r["created_at"])} for r in rows]}


@router.get("/{code}/diff", response_model=WorkflowDiff, response_model_by_alias=True)
def diff(request: Request, code: str = CODE, caller: Caller = auth.Viewer,
         from_: int = Query(..., alias="from", ge=1, le=MAX_VERSION),
         to: int = Query(..., ge=1, le=MAX_VERSION)) -> dict[str, Any]:
    """A unified diff of two versions plus steps added, removed and changed."""
    with read_engine(request).connect() as conn:
        _visible(conn, caller, code)
        return workflow_repo.diff_versions(conn, code, from_, to)


@router.post("/{code}/activate", response_model=WorkflowActivation)
def activate(body: ActivateRequest, request: Request, code: str = CODE,
             caller: Caller = auth.Operator) -> dict[str, Any]:
    """Make a version current (an older one = a rollback); also re-activates a deactivated workflow."""
    with runtime(request).engine.begin() as conn:
        _writable(conn, caller, code)
        workflow_repo.activate_version(conn, code, body.version)
    return {"code": code, "version": body.version, "active": True}


@router.post("/{code}/deactivate", response_model=WorkflowActivation)
def deactivate(request: Request, code: str = CODE, caller: Caller = auth.Operator) -> dict[str, Any]:
    """Refuse new jobs for this workflow (jobs already submitted still run)."""
    with runtime(request).engine.begin() as conn:
        _writable(conn, caller, code)
        workflow_repo.set_active(conn, code, False)
    return {"code": code, "active": False}
