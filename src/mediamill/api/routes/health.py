"""Liveness and readiness (unauthenticated)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mediamill.store.connections import probe_schema

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready to accept jobs: the database answers (schema migrated) and storage can take files
    (local: free space at or above ``MEDIAMILL_STORAGE_MIN_FREE_MB``; S3: the bucket exists and
    is writable). 503 names what is wrong; ``checks`` has the details of each."""
    rt = request.app.state.runtime
    checks = {"database": _database(rt), "storage": _storage(rt)}
    failing = [name for name, check in checks.items() if check["status"] != "ok"]
    if failing:
        detail = "; ".join(f"{name}: {checks[name].get('problem') or checks[name].get('detail')}" for name in failing)
        return JSONResponse({"status": "unavailable", "detail": detail, "checks": checks}, status_code=503,
                            headers={"Retry-After": "5"})
    return JSONResponse({"status": "ok", "checks": checks})


def _database(rt: Any) -> dict[str, Any]:
    try:
        probe_schema(rt.engine)
    except Exception as exc:  # any driver error means not ready
        return {"status": "unavailable", "detail": type(exc).__name__}
    return {"status": "ok"}


def _storage(rt: Any) -> dict[str, Any]:
    try:
        return rt.storage.health().as_dict()  # type: ignore[no-any-return]
    except Exception as exc:  # a storage check that fails is itself "not ready"
        return {"status": "unavailable", "detail": type(exc).__name__}
