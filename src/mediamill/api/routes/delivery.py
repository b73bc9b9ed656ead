"""Where jobs of a tenant may deliver when they override their workflow's ``deliver:``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import runtime
from mediamill.store import tenant_settings

router = APIRouter(prefix="/v1/delivery", tags=["delivery"])
#: ``s3://bucket[/prefix]`` or an absolute folder path
PREFIX_PATTERN = r"^(s3://.+|/.*)$"


class Prefixes(BaseModel):
    """Folder paths (``/srv/media``) and S3 prefixes (``s3://cdn/videos``) under which overrides may write."""

    model_config = ConfigDict(extra="forbid")
    prefixes: list[Annotated[str, StringConstraints(pattern=PREFIX_PATTERN)]] = Field(max_length=100)


@router.get("/prefixes")
def get_prefixes(request: Request, caller: Caller = auth.Viewer) -> dict[str, list[str]]:
    """The caller's tenant's allow-list for per-job ``deliver`` overrides."""
    with runtime(request).engine.connect() as conn:
        return {"prefixes": tenant_settings.deliver_prefixes(conn, caller.tenant_id)}


@router.put("/prefixes")
def put_prefixes(body: Prefixes, request: Request, caller: Caller = auth.Admin) -> dict[str, list[str]]:
    """Replace the allow-list (admins only: it decides where jobs may write)."""
    with runtime(request).engine.begin() as conn:
        return {"prefixes": tenant_settings.set_deliver_prefixes(conn, caller.tenant_id, body.prefixes)}
