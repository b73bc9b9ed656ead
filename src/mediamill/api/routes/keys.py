"""API keys and tenants (admins only). An admin manages keys of its own tenant; an admin of the
``default`` tenant (the root admin) may list, create and revoke keys of any tenant (that is how
tenants come to exist, and how a leaked key of any tenant is stopped)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import MAX_ID, read_engine, runtime
from mediamill.api.models import Items, KeyCreate, KeyCreated, Me, Ok
from mediamill.api.problems import PROBLEM_RESPONSES
from mediamill.errors import Conflict, Forbidden
from mediamill.store import auth_repo
from mediamill.store.timeutil import iso

router = APIRouter(prefix="/v1", tags=["auth"], responses=PROBLEM_RESPONSES)


@router.get("/keys", response_model=Items)
def list_keys(request: Request, caller: Caller = auth.Admin,
              tenant: str | None = Query(None, max_length=64, description="root admin only: another tenant's "
                                                                          "keys, or `*` for every tenant")
              ) -> dict[str, Any]:
    """The tenant's keys (never their secrets)."""
    wanted = tenant or caller.tenant_id
    if wanted != caller.tenant_id and not caller.is_root:
        raise Forbidden("only an admin of the default tenant lists keys of other tenants")
    with read_engine(request).connect() as conn:
        rows = auth_repo.list_keys(conn, tenant_id=None if wanted == "*" else wanted)
    return {"items": [{**r, "created_at": iso(r["created_at"]), "revoked_at": iso(r["revoked_at"]),
                       "last_used_at": iso(r["last_used_at"])} for r in rows]}


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, request: Request, caller: Caller = auth.Admin) -> JSONResponse:
    """Create a key; its plaintext is in this response only."""
    tenant = body.tenant or caller.tenant_id
    if tenant != caller.tenant_id and not caller.is_root:
        raise Forbidden("only an admin of the default tenant creates keys for other tenants")
    created = auth_repo.create_key(runtime(request).engine, role=body.role, tenant_id=tenant, name=body.name)
    return JSONResponse({"id": created.id, "tenant": created.tenant_id, "role": created.role, "name": created.name,
                         "prefix": created.prefix, "key": created.plaintext}, status_code=201)


@router.delete("/keys/{key_id}", response_model=Ok)
def revoke_key(request: Request, key_id: int = Path(..., ge=1, le=MAX_ID),
               caller: Caller = auth.Admin) -> dict[str, Any]:
    """Revoke a key of the tenant — of any tenant for the root admin (immediately in this process,
    within seconds elsewhere)."""
    if key_id == caller.key_id:
        raise Conflict("a key cannot revoke itself; use another admin key")
    auth_repo.revoke_key(runtime(request).engine, key_id, tenant_id=None if caller.is_root else caller.tenant_id)
    return {"ok": True}


@router.get("/me", response_model=Me)
def whoami(caller: Caller = auth.Viewer) -> dict[str, Any]:
    """The caller: tenant, role and key id."""
    return {"tenant": caller.tenant_id, "role": caller.role, "key_id": caller.key_id, "name": caller.name}
