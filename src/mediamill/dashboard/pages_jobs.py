"""Pages about jobs: overview, jobs list, job detail, upload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from mediamill.dashboard import queries as q
from mediamill.dashboard.web import WINDOWS, Page, page, render, to_datetime
from mediamill.engine import operations as ops
from mediamill.engine import review
from mediamill.errors import NotFound
from mediamill.notify import alerting
from mediamill.statuses import TERMINAL_JOB
from mediamill.store import analytics, workflow_repo
from mediamill.store import dashboard_queries as dq
from mediamill.store.analytics import STATUS_ORDER
from mediamill.store.routing_repo import REVIEW_QUEUE
from mediamill.store.timeutil import utcnow

router = APIRouter(include_in_schema=False)
PAGE = Depends(page)
#: Orders of the jobs list (the first is the default).
ORDERS = {"newest": "Newest first", "status": "Failed first, then running, waiting, finished (by priority)"}
HLS_PLAYLIST = frozenset({"application/vnd.apple.mpegurl", "application/x-mpegurl"})


def _window(value: str) -> tuple[str, float, int]:
    key = value if value in WINDOWS else "24h"
    hours, bucket = WINDOWS[key]
    return key, hours, bucket


@router.get("/", response_class=HTMLResponse)
def overview(pg: Page = PAGE, window: str = Query("24h", max_length=4)) -> HTMLResponse:
    """KPIs of the window and charts over time; queues, workers, breakers and alerts right now.

    The window's cards are :func:`analytics.summary` — the very numbers of ``GET /v1/analytics/summary``."""
    key, hours, bucket = _window(window)
    since, tenant = q.window_start(hours), pg.caller.tenant_id
    with pg.engine.connect() as conn:
        figures = analytics.summary(conn, tenant_id=tenant, window_seconds=analytics.SUMMARY_WINDOWS[key])
        w = dq.window(conn, since)
        series, submitted = _window_series(conn, w, tenant, bucket)
        live, failures = dq.live_counts(conn, tenant), dq.recent_failures(conn, tenant)
        total = dq.estimated_jobs(conn, pg.caller.scope)
        firing = alerting.alerts_for(pg.request.app.state.runtime.settings, conn, pg.caller.scope, state="firing",
                                     limit=20)
    points = q.fill_buckets(series, submitted, since=since, bucket=bucket)
    queues = ops.queue_stats(pg.engine, tenant_id=pg.caller.scope)
    kpis = {**figures, "throughput": figures["finished"] / hours, "total": total,
            "depth": sum(x["depth"] for x in queues), "waiting": sum(x["waiting"] for x in queues),
            "workers": len(ops.list_workers(pg.engine, lease_seconds=pg.settings.lease_seconds,
                                              tenant_id=pg.caller.scope))}
    breakers = [b for b in ops.list_breakers(pg.engine) if b["state"] != "closed"]
    return render(pg, "overview.html", "overview", "Overview", window=key, kpis=kpis, points=points, live=live,
                  failures=failures, queues=queues, breakers=breakers, firing=firing, sample_step=w.step)


def _window_series(conn: Any, w: dq.Window, tenant: str, bucket: int) -> tuple[Any, dict[int, int]]:
    """(finished series, submitted per bucket) for the charts: exact, or estimated from a sample of a large
    window."""
    if w.sampled:
        return q.sampled_series(dq.sampled_jobs(conn, w, tenant), w, bucket)
    return (dq.finished_series(conn, tenant_id=tenant, since=w.since, bucket=bucket),
            dq.submitted_series(conn, tenant_id=tenant, since=w.since, bucket=bucket))


def _workflow_id(codes: dict[int, str], code: str | None) -> int | None:
    if not code:
        return None
    return next((i for i, c in codes.items() if c == code), -1)


@router.get("/jobs", response_class=HTMLResponse)
def jobs(pg: Page = PAGE, status: str | None = Query(None, max_length=20),
         workflow: str | None = Query(None, max_length=50), queue: str | None = Query(None, max_length=50),
         search: str | None = Query(None, alias="q", max_length=60),
         order: str = Query("newest", max_length=10),
         after: str | None = Query(None, max_length=60)) -> HTMLResponse:
    """Jobs newest first, or by status (failed first, then running, waiting, finished; then priority),
    keyset-paged either way."""
    status = status if status in STATUS_ORDER else None
    order = order if order in ORDERS else "newest"
    with pg.engine.connect() as conn:
        codes = dq.workflow_codes(conn, pg.caller.tenant_id)
        f = dq.JobFilter(pg.caller.tenant_id, status, _workflow_id(codes, workflow), queue or None, search or None)
        rows, next_after = _job_rows(conn, f, order, after)
        live, total = dq.live_counts(conn, pg.caller.tenant_id), dq.estimated_jobs(conn, pg.caller.scope)
    for r in rows:
        r["workflow_code"] = codes.get(r["workflow_id"], "?")
        r["duration_seconds"] = _run_seconds(r)
    params = {"status": status, "workflow": workflow, "queue": queue, "q": search,
              "order": None if order == "newest" else order}
    queues = sorted({x["name"] for x in ops.queue_stats(pg.engine, tenant_id=pg.caller.scope)})
    return render(pg, "jobs.html", "jobs", "Jobs", rows=rows, next_after=next_after, params=params, after=after,
                  order=order, orders=ORDERS, statuses=STATUS_ORDER, codes=sorted(codes.values()), queues=queues,
                  live=live, total=total)


def _job_rows(conn: Any, f: dq.JobFilter, order: str, after: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """A page of jobs in ``order`` and the ``after`` value of the next page."""
    if order == "status":
        rows, cursor = dq.job_page(conn, f, dq.Cursor.parse(after))
        return rows, str(cursor) if cursor else None
    before = min(int(after), 2**62) if after and after.isdigit() else None
    rows, next_before = dq.newest_page(conn, f, before)
    return rows, str(next_before) if next_before else None


def _run_seconds(job: dict[str, Any]) -> float | None:
    """How long a job ran: until it finished, or until now while it runs (None before it started)."""
    started = to_datetime(job.get("started_at"))
    if started is None:
        return None
    end = to_datetime(job.get("finished_at")) or (utcnow() if job.get("status") == "processing" else None)
    return (end - started).total_seconds() if end else None


def _preview(output: dict[str, Any]) -> str:
    mime, name = (output.get("mime_type") or ""), output.get("name") or ""
    if mime in HLS_PLAYLIST:
        # the master lists the variants; variant playlists and segments are parts of the ladder
        return "hls" if (output.get("metadata") or {}).get("variants") is not None else "hls-part"
    if mime == "video/mp2t":
        return "hls-part"
    if mime.startswith("image/"):
        return "image"
    if mime in ("video/mp4", "video/webm"):
        return "video"
    if mime.startswith("audio/"):
        return "audio"
    if "waveform" in name and (mime == "application/json" or name.endswith(".json")):
        return "waveform"
    return "file"


def _load_job(pg: Page, job_id: int) -> tuple[dict[str, Any], list[Any], list[int]]:
    job = ops.get_job(pg.engine, job_id, tenant_id=pg.caller.tenant_id)
    with pg.engine.connect() as conn:
        wf = workflow_repo.get_workflow(conn, job["workflow_id"], job.get("workflow_version"))
        versions = [v["version"] for v in workflow_repo.list_versions(conn, job["workflow_code"])]
    return job, list(wf.definition.steps), versions


def _seconds_between(start: Any, end: Any) -> float | None:
    a, b = to_datetime(start), to_datetime(end)
    return (b - a).total_seconds() if a and b else None


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_detail(job_id: int, pg: Page = PAGE) -> HTMLResponse:
    """Step timeline, live progress, decisions, errors, output previews and actions."""
    try:
        job, steps, versions = _load_job(pg, job_id)
    except NotFound:
        return render(pg, "missing.html", "jobs", "Not found", what=f"job {job_id}")
    for o in job["outputs"]:
        o["preview"] = _preview(o)
    hls_parts = [o for o in job["outputs"] if o["preview"] == "hls-part"]
    job["outputs"] = [o for o in job["outputs"] if o["preview"] != "hls-part"]
    rows = q.timeline(job, steps)
    job["duration_seconds"] = _seconds_between(job.get("started_at"), job.get("finished_at"))
    last_event = max((e["id"] for e in job["events"]), default=0)
    failed_step = next((r for r in rows if r["status"] == "failed"), None)
    in_review = job["status"] == "pending" and job["queue_name"] == REVIEW_QUEUE
    candidates = review.review_candidates(pg.engine, job) if in_review else []
    return render(pg, "job.html", "jobs", job["job_code"], job=job, steps=rows, final=job["status"] in TERMINAL_JOB,
                  decisions=q.decisions(job), events=list(reversed(job["events"][-100:])), last_event=last_event,
                  failed_step=failed_step, versions=versions, in_review=in_review, candidates=candidates,
                  hls_parts=hls_parts)


@router.get("/upload", response_class=HTMLResponse)
def upload(pg: Page = PAGE) -> HTMLResponse:
    """Drag and drop, resumable (tus), then follow the job live."""
    with pg.engine.connect() as conn:
        rows = workflow_repo.list_workflows(conn)
        visible = set(dq.workflow_codes(conn, pg.caller.tenant_id).values())
    workflows = [r for r in rows if r["workflow_code"] in visible and r["is_active"]]
    return render(pg, "upload.html", "upload", "Upload", workflows=workflows)
