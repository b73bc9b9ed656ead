"""RFC 9457 problem+json responses for every error the API returns."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
        return problem(exc.http_status, exc.title, exc.public_message,
                       type_=f"https://mediamill.dev/problems/{exc.error_class}", **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail) if exc.detail else None,
                       headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return problem(422, "Request validation failed", errors[0]["msg"] if errors else None,
                       errors=errors)


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
