"""Analytics: the four reference reports (jobs by status, queue monitor, step performance, workflow
summary — the SQL in tests/fixtures/seed_001_queries.sql) plus durations, error rates and throughput (all windowed)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import parse_time, read_engine
from mediamill.api.models import AnalyticsSummary, Items, Loose
from mediamill.api.problems import PROBLEM_RESPONSES
from mediamill.errors import InvalidInput
from mediamill.store import analytics

router = APIRouter(prefix="/v1/analytics", tags=["analytics"], responses=PROBLEM_RESPONSES)
SINCE = Query(None, description="start of the window, RFC 3339 (default: 24 hours ago)", max_length=40,
              json_schema_extra={"format": "date-time"})


def _since(value: str | None) -> datetime | None:
    return parse_time(value, "query.since")


def _run(request: Request, fn: Callable[..., Any], **kwargs: Any) -> Any:
    with read_engine(request).connect() as conn:
        return fn(conn, **kwargs)


@router.get("/summary", response_model=AnalyticsSummary)
def summary(request: Request, caller: Caller = auth.Viewer,
            window: Literal["1h", "6h", "24h", "7d"] = Query("24h", description="the last 1h, 6h, 24h or 7d"),
            ) -> dict[str, Any]:
    """Jobs submitted and finished in the window by outcome, error rate (failed / finished) and the p95
    run time of successful jobs — the figures of the dashboard's overview."""
    return _run(request, analytics.summary, tenant_id=caller.tenant_id,  # type: ignore[no-any-return]
                window_seconds=analytics.SUMMARY_WINDOWS[window])


@router.get("/job-status", response_model=Loose)
def job_status(request: Request, caller: Caller = auth.Viewer, since: str | None = SINCE,
               limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    """Job status report: jobs by status (failed, processing, queued, pending, completed) then priority."""
    return _run(request, analytics.job_status, tenant_id=caller.tenant_id, since=_since(since),  # type: ignore[no-any-return]
                limit=limit)


@router.get("/queues", response_model=Items)
def queues(request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """Queue monitor: jobs in each queue, waiting, processing, average priority, next scheduled."""
    return {"items": _run(request, analytics.queues, tenant_id=caller.tenant_id)}


@router.get("/steps", response_model=Items)
def steps(request: Request, caller: Caller = auth.Viewer, since: str | None = SINCE) -> dict[str, Any]:
    """Step performance: executions, duration avg/min/max and failures per (versioned) step."""
    return {"items": _run(request, analytics.steps, tenant_id=caller.tenant_id, since=_since(since))}


@router.get("/workflows", response_model=Items)
def workflows(request: Request, caller: Caller = auth.Viewer, since: str | None = SINCE) -> dict[str, Any]:
    """Workflow summary: jobs, completions, failures, in progress and average minutes per workflow."""
    return {"items": _run(request, analytics.workflows, tenant_id=caller.tenant_id, since=_since(since))}


@router.get("/durations", response_model=Loose)
def durations(request: Request, caller: Caller = auth.Viewer, since: str | None = SINCE) -> dict[str, Any]:
    """p50/p95/p99 job durations per workflow (s) and step durations per action (ms)."""
    return _run(request, analytics.durations, tenant_id=caller.tenant_id, since=_since(since))  # type: ignore[no-any-return]


@router.get("/errors", response_model=Loose)
def errors(request: Request, caller: Caller = auth.Viewer, since: str | None = SINCE) -> dict[str, Any]:
    """Error rate of finished jobs, by error class, and step failures by action."""
    return _run(request, analytics.error_rates, tenant_id=caller.tenant_id, since=_since(since))  # type: ignore[no-any-return]


@router.get("/throughput", response_model=Loose)
def throughput(request: Request, caller: Caller = auth.Viewer, since: str | None = SINCE,
               bucket: str = Query("1h", pattern=r"^(1m|5m|15m|1h|6h|1d|[0-9]{2,7})$")) -> dict[str, Any]:
    """Jobs submitted and finished per time bucket."""
    try:
        size = analytics.bucket_seconds(bucket)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return _run(request, analytics.throughput, tenant_id=caller.tenant_id, since=_since(since),  # type: ignore[no-any-return]
                bucket=str(size) if bucket not in analytics.BUCKETS else bucket)
