"""The HTTP application: API under /v1 (and the dashboard at /)."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from mediamill import __version__, dashboard
from mediamill.api import headers as head_limits
from mediamill.api.headers import HeaderLimitMiddleware
from mediamill.api.limits import BodyLimitMiddleware
from mediamill.api.models import JobEvent, JobSubmit, NotifySpec
from mediamill.api.problems import PROBLEM, Problem, install_problem_handlers, problem
from mediamill.api.routes import actions as actions_routes
from mediamill.api.routes import (
    analytics,
    events,
    health,
    jobs,
    keys,
    operations,
    rollouts,
    routing,
    uploads,
    workflows,
)
from mediamill.api.routes import delivery as delivery_routes
from mediamill.api.routes import metrics as metrics_routes
from mediamill.api.routes import notify as notify_routes
from mediamill.api.routes import sources as sources_routes
from mediamill.errors import StorageFull
from mediamill.loops import Backoff, LoopRunner, Periodic
from mediamill.observability.http import HttpMetricsMiddleware
from mediamill.observability.logging import RequestIdMiddleware
from mediamill.runtime import Runtime, freeze_startup_heap
from mediamill.storage.base import NO_SPACE
from mediamill.store import auth_repo
from mediamill.store.connections import OUT_OF_RANGE_ERRORS, UNAVAILABLE_ERRORS

log = logging.getLogger("mediamill.api")
#: seconds a client is asked to wait when the database does not answer
DATABASE_RETRY_AFTER = 5

API_DESCRIPTION = """mediamill's HTTP API. Authenticate with `Authorization: Bearer mm_…`.
Errors are RFC 9457 problem documents (`application/problem+json`). Another tenant's
resources answer 404."""


SWEEP_SECONDS = 600.0


def _sweepers(rt: Runtime, stop: threading.Event) -> list[LoopRunner]:
    """Expired, unfinished uploads and their part files go away (tus expiration), and so do spent
    session and login-link nonces past their expiry: each every SWEEP_SECONDS, in a thread of its own
    (one chore that keeps failing does not hold up the other); a failed sweep is logged and retried
    at the next one."""
    from mediamill.api.routes.uploads import remove_expired

    every = Backoff(first=SWEEP_SECONDS, most=SWEEP_SECONDS)
    chores = (("uploads", remove_expired), ("tokens", _prune_spent_tokens))
    return [LoopRunner(Periodic(f"sweep of expired {what}", functools.partial(chore, rt), SWEEP_SECONDS), stop,
                       thread_name=f"mm-sweep-{what}", backoff=every, start_after=SWEEP_SECONDS, logger=log)
            for what, chore in chores]


def _prune_spent_tokens(rt: Runtime) -> None:
    auth_repo.prune_spent_tokens(rt.engine)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    freeze_startup_heap()  # (everything imported and built so far lives as long as the process)
    stop_sweeping = threading.Event()
    for sweeper in _sweepers(app.state.runtime, stop_sweeping):
        sweeper.start()
    yield
    stop_sweeping.set()  # a sweep under way finishes in its (daemon) thread; none starts after this
    hub = getattr(app.state, "event_hub", None)
    if hub is not None:
        await hub.close()
    reader = getattr(app.state, "read_engine", None)
    if reader is not None and reader is not app.state.runtime.engine:
        reader.dispose()


def create_app(runtime: Runtime | None = None) -> FastAPI:
    rt = runtime or Runtime()
    app = FastAPI(title="mediamill", version=__version__, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url=None, description=API_DESCRIPTION, lifespan=_lifespan)
    app.state.runtime = rt
    install_problem_handlers(app)
    _install_fallback_handler(app)
    app.add_middleware(BodyLimitMiddleware, max_request_bytes=rt.settings.max_request_bytes,
                       max_upload_bytes=rt.settings.max_upload_bytes,
                       body_idle_seconds=rt.settings.body_idle_timeout_seconds)
    app.add_middleware(HeaderLimitMiddleware, max_bytes=rt.settings.max_header_bytes,
                       max_count=rt.settings.max_header_count)
    head_limits.configure(rt.settings)  # the same caps while the head arrives (CappedHttpToolsProtocol)
    _install_cors(app, rt.settings.cors_origins)
    app.include_router(health.router)
    for module in (jobs, events, uploads, workflows, rollouts, routing, operations, analytics, keys):
        app.include_router(module.router)
    app.include_router(notify_routes.router)
    app.include_router(actions_routes.router)
    app.include_router(sources_routes.router)
    app.include_router(delivery_routes.router)
    app.include_router(metrics_routes.router)
    dashboard.install(app)  # the web dashboard at / (pages, /static, the session-cookie resolver)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every log line of a request carries its id
    _document_problem(app, rt.settings.max_upload_bytes)
    return app


TUS_EXPOSED = ["Location", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Expires",
               "Upload-Defer-Length", "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
               "Tus-Checksum-Algorithm", "X-Request-ID", "Retry-After"]


def _install_cors(app: FastAPI, origins: str) -> None:
    """Browsers on the listed origins may call the API (tus clients need its headers exposed)."""
    allowed = [o.strip() for o in origins.split(",") if o.strip()]
    if not allowed:
        return
    app.add_middleware(CORSMiddleware, allow_origins=allowed, allow_credentials=False, allow_headers=["*"],
                       allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                       expose_headers=TUS_EXPOSED, max_age=600)


def _install_fallback_handler(app: FastAPI) -> None:
    async def _out_of_range(_req: Request, _exc: Exception) -> JSONResponse:
        # a number the database cannot hold (SQLite's INTEGER, PostgreSQL's bigint) is a bad request
        return problem(422, "Value out of range", "a number in the request is too large for this field")

    out_of_range: tuple[type[Exception], ...] = (OverflowError, *OUT_OF_RANGE_ERRORS)
    for cls in out_of_range:
        app.add_exception_handler(cls, _out_of_range)

    async def _database(_req: Request, exc: Exception) -> JSONResponse:
        # handled here (not by the catch-all, which closes the connection): the client keeps its
        # keep-alive connection and is told when to come back
        if database_disk_full(exc):
            return _insufficient_storage()
        log.warning("database unavailable: %s", type(exc).__name__)
        return problem(503, "Service unavailable", "the database is not answering; nothing was changed. "
                       "Try again shortly.", headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
                       type_="https://mediamill.dev/problems/unavailable", error_class="transient")

    for cls in UNAVAILABLE_ERRORS:
        app.add_exception_handler(cls, _database)

    @app.exception_handler(OSError)
    async def _os_error(_req: Request, exc: OSError) -> JSONResponse:
        if exc.errno in NO_SPACE:
            return _insufficient_storage()
        log.exception("unexpected OS error", exc_info=exc)
        return problem(500, "Internal Server Error", "an unexpected error occurred")

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, _exc: Exception) -> JSONResponse:
        # never leak internals (paths, SQL) to a client; the log has the traceback
        return problem(500, "Internal Server Error", "an unexpected error occurred")


def database_disk_full(exc: Exception) -> bool:
    """SQLite's "database or disk is full" and PostgreSQL's disk-full SQLSTATE 53100."""
    orig = getattr(exc, "orig", None)
    return "database or disk is full" in str(orig) or getattr(orig, "sqlstate", None) == "53100" \
        or "No space left on device" in str(orig)


def _insufficient_storage() -> JSONResponse:
    full = StorageFull("the server's storage is full; nothing was stored. Try again later.")
    return problem(507, full.title, full.public_message, headers={"Retry-After": str(full.retry_after)},
                   type_="https://mediamill.dev/problems/resource", error_class=full.error_class)


def _document_problem(app: FastAPI, max_upload_bytes: int) -> None:
    """Make sure the Problem schema is in the OpenAPI components (routes reference it by $ref)."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (Problem, JobSubmit, NotifySpec, JobEvent):
            components.setdefault(model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}"))
        _problems_everywhere(schema)
        _parameters_without_null(schema)
        _upload_limits(schema, max_upload_bytes)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problems_everywhere(schema: dict[str, Any]) -> None:
    """Every operation documents its errors as problem documents (whoever wrote the route)."""
    ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for path, item in schema.get("paths", {}).items():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            codes = _ERROR_CODES if path not in _OPEN_PATHS else ()
            for code in codes:
                op["responses"].setdefault(str(code), {"description": HTTPStatus(code).phrase})
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    response.setdefault("content", {})[PROBLEM] = ref


_ERROR_CODES = (400, 401, 403, 404, 409, 413, 422, 429)
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _parameters_without_null(schema: dict[str, Any]) -> None:
    """An optional query or header parameter is left out, never sent as null: ``anyOf [X, null]``
    becomes X (a generated client would otherwise send the text "null")."""
    for item in schema.get("paths", {}).values():
        for op in item.values():
            if isinstance(op, dict) and "parameters" in op:
                op["parameters"] = [_without_null(p) for p in op["parameters"]]


def _without_null(param: dict[str, Any]) -> dict[str, Any]:
    options = param.get("schema", {}).get("anyOf")
    if not (options and len(options) == 2 and {"type": "null"} in options):
        return param
    kept = next(o for o in options if o != {"type": "null"})
    return {**param, "schema": {**kept, **{k: v for k, v in param["schema"].items() if k != "anyOf"}}}


def _upload_limits(schema: dict[str, Any], max_upload_bytes: int) -> None:
    """Sizes above this install's upload limit are refused (413): the schema says so."""
    paths = schema.get("paths", {})
    for op in (paths.get("/v1/uploads", {}).get("post"), paths.get("/v1/uploads/{upload_id}", {}).get("patch")):
        if op is None:
            continue
        # new objects, not edits: route parameters come from module-level dicts that every app shares
        op["parameters"] = [{**p, "schema": {**p["schema"], "maximum": max_upload_bytes}}
                            if p.get("name") == "Upload-Length" else p for p in op.get("parameters", [])]
    presign = schema.get("components", {}).get("schemas", {}).get("PresignRequest", {})
    size = presign.get("properties", {}).get("size")
    if size is not None:  # a fresh schema per app (pydantic builds it on each call)
        for option in size.get("anyOf", [size]):
            if option.get("type") == "integer":
                option["maximum"] = max_upload_bytes
