"""``GET /metrics``: Prometheus exposition of every process's events plus the database gauges.

Unauthenticated by default (scrapers rarely carry keys); ``MEDIAMILL_METRICS_REQUIRE_KEY=true``
requires an API key of any role.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from mediamill.observability import metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format (OpenMetrics when the scraper asks for it)."""
    rt = request.app.state.runtime
    if rt.settings.metrics_require_key:
        await _authenticate(request)
    metrics.ensure_configured(rt.settings)
    openmetrics = "application/openmetrics-text" in request.headers.get("accept", "")
    body, content_type = await run_in_threadpool(metrics.render, rt.engine, openmetrics=openmetrics)
    return Response(body, media_type=content_type)


async def _authenticate(request: Request) -> None:
    from mediamill.api.auth import bearer, current_caller

    credentials: HTTPAuthorizationCredentials | None = await bearer(request)
    await current_caller(request, credentials)
