"""The HTTP application: API under /v1 (and the dashboard at /)."""

from __future__ import annotations

from fastapi import FastAPI

from mediamill import __version__
from mediamill.api.problems import install_problem_handlers
from mediamill.api.routes import health, workflows
from mediamill.runtime import Runtime


def create_app(runtime: Runtime | None = None) -> FastAPI:
    rt = runtime or Runtime()
    app = FastAPI(title="mediamill", version=__version__, openapi_url="/openapi.json",
                  docs_url="/docs", redoc_url=None)
    app.state.runtime = rt
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(workflows.router)
    return app
