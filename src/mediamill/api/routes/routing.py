"""Routing rules over HTTP: list, create, read, change, delete, reorder, and ``explain`` — where a
submission without a workflow would go, and why. Every rule belongs to the caller's tenant."""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import MAX_ID, MAX_VERSION, read_engine, runtime
from mediamill.api.models import ByteSize, Items, Loose
from mediamill.api.problems import PROBLEM_RESPONSES, MethodNotAllowed
from mediamill.engine.routing import RoutingFacts, decide, validate_rule
from mediamill.errors import InvalidInput
from mediamill.store import routing_repo

router = APIRouter(prefix="/v1/routing-rules", tags=["routing"], responses=PROBLEM_RESPONSES)
RULE_ID = Path(..., ge=1, le=MAX_ID)
NAME = r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$"
CODE = r"^[A-Z0-9][A-Z0-9_\-]{1,49}$"


class RuleIn(BaseModel):
    """A routing rule: when ``condition`` (CEL over ``input`` and ``job``) holds, run ``workflow``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    condition: str = Field(min_length=1, max_length=2000)
    workflow: str = Field(pattern=CODE)
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION, description="pin a version")
    position: int | None = Field(default=None, ge=0, le=1_000_000, description="lower is evaluated first")
    enabled: bool = True


class RulePatch(BaseModel):
    """The fields of a rule to change (``version: null`` removes a pin)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, pattern=NAME)
    condition: str | None = Field(default=None, min_length=1, max_length=2000)
    workflow: str | None = Field(default=None, pattern=CODE)
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    position: int | None = Field(default=None, ge=0, le=1_000_000)
    enabled: bool | None = None


class Reorder(BaseModel):
    """The new evaluation order."""

    model_config = ConfigDict(extra="forbid")
    ids: list[int] = Field(min_length=1, max_length=1000, description="every rule id, in the new order")


class ExplainIn(BaseModel):
    """A submission to route without submitting it (``mime`` defaults to a guess from ``filename``)."""

    model_config = ConfigDict(extra="forbid")
    filename: str | None = Field(default=None, max_length=255)
    mime: str | None = Field(default=None, max_length=100)
    size: ByteSize | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


@router.get("", response_model=Items)
def list_rules(request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """The tenant's rules in the order they are evaluated."""
    with read_engine(request).connect() as conn:
        return {"items": routing_repo.list_rules(conn, caller.tenant_id)}


@router.post("", status_code=201, response_model=Loose)
def create_rule(body: RuleIn, request: Request, caller: Caller = auth.Operator) -> JSONResponse:
    """Add a rule (last unless ``position`` says otherwise); a broken condition is a 422 with its position."""
    with runtime(request).engine.begin() as conn:
        validate_rule(conn, caller.tenant_id, body.model_dump())
        rule = routing_repo.create_rule(conn, caller.tenant_id, body.model_dump(), by=caller.label)
    return JSONResponse(rule, status_code=201, headers={"Location": f"/v1/routing-rules/{rule['id']}"})


@router.api_route("/reorder", methods=["GET", "PATCH", "DELETE"], include_in_schema=False)
@router.api_route("/explain", methods=["GET", "PATCH", "DELETE"], include_in_schema=False)
def _actions_take_post_only() -> None:
    """``reorder`` and ``explain`` are actions, not rule ids: other methods are 405 (not a 422 for the id)."""
    raise MethodNotAllowed("POST")


@router.post("/reorder", response_model=Items)
def reorder(body: Reorder, request: Request, caller: Caller = auth.Operator) -> dict[str, Any]:
    """Set the evaluation order at once (what drag-to-reorder sends)."""
    with runtime(request).engine.begin() as conn:
        known = {r["id"] for r in routing_repo.list_rules(conn, caller.tenant_id)}
        if set(body.ids) != known or len(body.ids) != len(known):
            raise InvalidInput("ids: list every rule of the tenant exactly once")
        for i, rule_id in enumerate(body.ids):
            routing_repo.update_rule(conn, rule_id, caller.tenant_id, {"position": (i + 1) * 10})
        return {"items": routing_repo.list_rules(conn, caller.tenant_id)}


@router.post("/explain", response_model=Loose)
def explain(body: ExplainIn, request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """Where a submission like this would go now, with every condition evaluated on the way."""
    mime = body.mime or (mimetypes.guess_type(body.filename)[0] if body.filename else None)
    facts = RoutingFacts(mime=mime, size=body.size, filename=body.filename, metadata=body.metadata,
                         submitter=caller.label)
    with read_engine(request).connect() as conn:
        decision = decide(conn, tenant_id=caller.tenant_id, facts=facts)
    return {**decision.event(), "mime": mime}


@router.get("/{rule_id}", response_model=Loose)
def get_rule(request: Request, rule_id: int = RULE_ID, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """One rule of the caller's tenant."""
    with read_engine(request).connect() as conn:
        return routing_repo.get_rule(conn, rule_id, caller.tenant_id)


@router.patch("/{rule_id}", response_model=Loose)
def patch_rule(body: RulePatch, request: Request, rule_id: int = RULE_ID,
               caller: Caller = auth.Operator) -> dict[str, Any]:
    """Change some fields of a rule (the condition is checked again)."""
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "version"}
    with runtime(request).engine.begin() as conn:
        current = routing_repo.get_rule(conn, rule_id, caller.tenant_id)
        merged = {**current, **changes}
        target = merged["workflow"] if {"workflow", "version"} & set(changes) else None
        validate_rule(conn, caller.tenant_id, {**changes, "workflow": target, "version": merged["version"]}, rule_id)
        return routing_repo.update_rule(conn, rule_id, caller.tenant_id, changes)


@router.delete("/{rule_id}", status_code=204, response_class=Response)
def delete_rule(request: Request, rule_id: int = RULE_ID, caller: Caller = auth.Operator) -> Response:
    """Delete a rule (jobs it routed keep its name in their ``routing``)."""
    with runtime(request).engine.begin() as conn:
        routing_repo.delete_rule(conn, rule_id, caller.tenant_id)
    return Response(status_code=204)
