"""The action catalogue over HTTP: what a workflow step can do and the parameters it takes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from mediamill.actions.base import load_actions, unknown_action_message
from mediamill.actions.catalog import describe_action, describe_actions
from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.problems import PROBLEM_RESPONSES
from mediamill.errors import NotFound

router = APIRouter(prefix="/v1/actions", tags=["actions"], responses=PROBLEM_RESPONSES)


class ParamInfo(BaseModel):
    name: str
    type: str
    required: bool
    default: Any = None
    allowed: list[Any] | None = None
    bounds: str = ""
    description: str = ""


class ActionInfo(BaseModel):
    name: str
    family: str = Field(description="video | image | audio | document | analysis | generic | test | a plug-in's own")
    description: str
    params_schema: dict[str, Any] = Field(description="JSON Schema of the step's `params`")
    params: list[ParamInfo] = Field(description="the schema flattened: one row per parameter")
    errors: list[str] = Field(description="error classes the action may fail with")
    isolated: bool = Field(description="runs in a separate step process (a crash cannot take the worker down)")
    idempotent: bool
    fuse: str | None = Field(description="consecutive steps with the same key run as one unit")
    plugin: dict[str, str] | None = Field(description="the package and entry point of a plug-in; null = built in")


class ActionList(BaseModel):
    items: list[ActionInfo]


@router.get("", response_model=ActionList)
def list_actions(caller: Caller = auth.Viewer,
                 family: str | None = Query(None, max_length=50, description="only this family")) -> dict[str, Any]:
    """Every registered action, built-in and plug-in, with its parameter schema."""
    return {"items": describe_actions(family=family)}


@router.get("/{name}", response_model=ActionInfo)
def get_action(name: str = Path(..., max_length=100), caller: Caller = auth.Viewer) -> dict[str, Any]:
    """One action."""
    actions = load_actions()
    spec = actions.get(name)
    if spec is None:
        raise NotFound(unknown_action_message(name, actions))
    return describe_action(spec)
