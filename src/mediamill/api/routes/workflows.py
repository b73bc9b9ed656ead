"""Workflow definitions over HTTP."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mediamill.store import workflow_repo
from mediamill.store.timeutil import iso

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {"code": row["workflow_code"], "name": row["workflow_name"], "type": row["workflow_type"],
            "queue": row["queue_name"], "priority": row["default_priority"], "active": bool(row["is_active"]),
            "current_version": row["current_version"], "versions": row["versions"],
            "updated_at": iso(row["updated_at"])}


@router.get("")
def list_workflows(request: Request) -> dict[str, Any]:
    """Every workflow with its current version."""
    with request.app.state.runtime.engine.connect() as conn:
        return {"items": [_summary(r) for r in workflow_repo.list_workflows(conn)]}


@router.get("/{code}")
def get_workflow(code: str, request: Request, version: int | None = None) -> dict[str, Any]:
    """One workflow's definition (the current version, or ``?version=N``)."""
    with request.app.state.runtime.engine.connect() as conn:
        got = workflow_repo.get_workflow(conn, code, version)
    return {"code": code, "version": got.version, "current_version": got.current_version,
            "active": got.is_active, "definition": got.definition.model_dump(mode="json", exclude_none=True)}
