"""The live web dashboard, served by the API app at ``/``.

Server-rendered pages (Jinja2) with small hand-written scripts and SVG charts; every asset is
in ``static/`` (no CDN, no build step). Pages read through :mod:`.queries` (bounded, indexed
reads); actions and live updates go through the public ``/v1`` API — the same routes, roles
and tenant checks as any client — authenticated by the session cookie (see :mod:`.session`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from mediamill.api import auth

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("mediamill.dashboard")


async def _to_login(request: Request, _exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='/')}", status_code=303)


def install(app: FastAPI) -> None:
    """Add the dashboard's pages, its static files and the session-cookie resolver to ``app``."""
    try:
        from mediamill.dashboard import login, pages_jobs, pages_ops, pages_pipelines, pages_sources, session
        from mediamill.dashboard.web import LoginRequired
    except ModuleNotFoundError as exc:  # the API stays up without its web pages
        if exc.name != "jinja2":
            raise
        log.warning("the web dashboard needs Jinja2 (pip install jinja2); serving the API only")
        return
    auth.set_session_resolver(session.resolve)
    app.include_router(login.router)
    app.include_router(pages_jobs.router)
    app.include_router(pages_ops.router)
    app.include_router(pages_pipelines.router)
    app.include_router(pages_sources.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(LoginRequired, _to_login)


__all__ = ["install"]
