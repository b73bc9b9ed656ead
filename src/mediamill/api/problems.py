"""RFC 9457 problem+json responses for every error the API returns."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediamill.errors import MediamillError, WorkflowInvalid

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str | None = None, *, type_: str = "about:blank",
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(MediamillError)
    async def _mediamill(_req: Request, exc: MediamillError) -> JSONResponse:
        extra: dict[str, Any] = {"error_class": exc.error_class}
        if isinstance(exc, WorkflowInvalid):
            extra["errors"] = exc.problems
        elif getattr(exc, "loc", None):  # a located client error (errors.locate)
            extra["errors"] = [{"loc": exc.loc, "msg": exc.msg}]  # type: ignore[attr-defined]
        extra.update(getattr(exc, "problem_fields", None) or {})
        return problem(exc.http_status, exc.title, exc.public_message, headers=_headers_for(exc),
                       type_=f"https://mediamill.dev/problems/{exc.error_class}", **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405 and not isinstance(exc, MethodNotAllowed):
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(req))}
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail) if exc.detail else None,
                       headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        detail = f"{errors[0]['loc']}: {errors[0]['msg']}" if errors else None
        return problem(422, "Request validation failed", detail, errors=errors)


class MethodNotAllowed(StarletteHTTPException):
    """A 405 whose route knows its ``Allow`` better than the path matching does."""

    def __init__(self, allow: str) -> None:
        super().__init__(405, headers={"Allow": allow})


def allowed_methods(request: Request) -> list[str]:
    """The methods the API documents for this path (Starlette's 405 names only the first route's).

    The most specific documented path wins: ``/v1/uploads/presign`` over ``/v1/uploads/{upload_id}``.
    """
    matches = [(template.count("{"), methods) for template, (pattern, methods) in _path_table(request).items()
               if pattern.match(request.url.path)]
    if not matches:
        return []
    methods = min(matches, key=lambda m: m[0])[1]
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


def _path_table(request: Request) -> dict[str, tuple[re.Pattern[str], set[str]]]:
    table: dict[str, tuple[re.Pattern[str], set[str]]] | None = getattr(request.app.state, "path_table", None)
    if table is None:
        table = {}
        for template, item in request.app.openapi().get("paths", {}).items():
            regex = "^" + "".join("[^/]+" if part.startswith("{") else re.escape(part)
                                  for part in re.split(r"(\{[^}/]+\})", template)) + "$"
            table[template] = (re.compile(regex), {m.upper() for m in item if m in _METHODS})
        request.app.state.path_table = table
    return table


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _headers_for(exc: MediamillError) -> dict[str, str] | None:
    if exc.http_status == 401:
        return {"WWW-Authenticate": 'Bearer realm="mediamill"'}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return {"Retry-After": str(retry_after)}
    return None


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    error_class: str | None = None
    errors: list[Any] | None = None


#: ``responses=`` for routers: every error is a problem document.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
           "description": desc}
    for code, desc in ((400, "Bad request"), (401, "No valid API key"), (403, "Role too weak"),
                       (404, "Not found (also: another tenant's resource)"), (409, "Conflict"),
                       (413, "Too large"), (415, "Unsupported media type"), (422, "Invalid request"),
                       (429, "Rate limited"))
}


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
