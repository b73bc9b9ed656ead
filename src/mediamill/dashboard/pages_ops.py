"""Pages for operating the system: queues, steps, workflows (and the editor), dead letters,
breakers, workers, notifications, alerts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from mediamill.dashboard import queries as q
from mediamill.dashboard.web import WINDOWS, Page, page, render
from mediamill.engine import operations as ops
from mediamill.engine import rollouts, shadow, tenancy
from mediamill.errors import NotFound
from mediamill.notify import alerting, channels, history
from mediamill.store import dashboard_queries as dq
from mediamill.store import workflow_repo
from mediamill.store.db import Connection

router = APIRouter(include_in_schema=False)
PAGE = Depends(page)
NEW_WORKFLOW = """code: WF-MY-PIPELINE
name: My pipeline
type: image
input_types: [image/jpeg, image/png]
queue: image
priority: 5
steps:
  - name: Validate
    action: validate_image
  - name: Thumbnail
    action: create_thumbnail
    params: {size: 300}
    on_failure: continue
"""


def _window(value: str) -> tuple[str, float]:
    key = value if value in WINDOWS else "24h"
    return key, WINDOWS[key][0]


@router.get("/queues", response_class=HTMLResponse)
def queues(pg: Page = PAGE) -> HTMLResponse:
    """Depth, waiting, processing, oldest wait, average priority per queue (the queue monitor report), pause/resume."""
    rows = ops.queue_stats(pg.engine, tenant_id=pg.caller.scope)
    with pg.engine.connect() as conn:
        extras = dq.queue_extras(conn, pg.caller.scope)
    for r in rows:
        r.update(extras.get(r["name"], {"avg_priority": None, "next_scheduled": None}))
    with pg.engine.connect() as conn:
        owners = tenancy.queue_owners(conn)
    for r in rows:  # the Pause button shows where the API would allow it
        r["pausable"] = pg.caller.is_root or (pg.can("operator") and owners.get(r["name"]) == {pg.caller.tenant_id})
    return render(pg, "queues.html", "queues", "Queues", queues=rows)


@router.get("/steps", response_class=HTMLResponse)
def steps(pg: Page = PAGE, window: str = Query("24h", max_length=4)) -> HTMLResponse:
    """The step performance report with p50/p95/p99 per versioned step."""
    key, hours = _window(window)
    with pg.engine.connect() as conn:
        rows = dq.step_report(conn, tenant_id=pg.caller.tenant_id, since=q.window_start(hours))
    return render(pg, "steps.html", "steps", "Step performance", rows=rows, window=key)


def _definitions(conn: Connection, tenant_id: str) -> list[dict[str, Any]]:
    owners = workflow_repo.workflow_owners(conn)
    return [{**r, "shared": owners.get(r["workflow_code"]) is None}
            for r in workflow_repo.list_workflows(conn) if owners.get(r["workflow_code"]) in (None, tenant_id)]


@router.get("/workflows", response_class=HTMLResponse)
def workflows(pg: Page = PAGE, window: str = Query("24h", max_length=4)) -> HTMLResponse:
    """The workflow summary report (with p50/p95/p99) and every definition, linking to the editor."""
    key, hours = _window(window)
    with pg.engine.connect() as conn:
        report = dq.workflow_report(conn, tenant_id=pg.caller.tenant_id, since=q.window_start(hours))
        defs = _definitions(conn, pg.caller.tenant_id)
    return render(pg, "workflows.html", "workflows", "Workflows", report=report, defs=defs, window=key)


def _writable(pg: Page, shared: bool) -> bool:
    return pg.can("admin") if shared else pg.can("operator")


@router.get("/workflows/new", response_class=HTMLResponse)
def new_workflow(pg: Page = PAGE) -> HTMLResponse:
    return render(pg, "editor.html", "workflows", "New workflow", code=None, source=NEW_WORKFLOW, versions=[],
                  version=None, current=None, writable=pg.can("operator"), shared=False, wf_active=True)


@router.get("/workflows/{code}", response_class=HTMLResponse)
def editor(code: str, pg: Page = PAGE, version: int | None = Query(None, ge=1, le=1_000_000)) -> HTMLResponse:
    """YAML editor (validated as you type), version history, diff, activate / roll back."""
    try:
        with pg.engine.connect() as conn:
            exists, owner = workflow_repo.workflow_owner(conn, code)
            if not exists or owner not in (None, pg.caller.tenant_id):
                raise NotFound(code)
            got = workflow_repo.get_workflow(conn, code, version)
            source = workflow_repo.version_source(conn, code, got.version)
            versions = workflow_repo.list_versions(conn, code)
    except NotFound:
        return render(pg, "missing.html", "workflows", "Not found", what=f"workflow {code}")
    shared = owner is None
    return render(pg, "editor.html", "workflows", code, code=code, source=source, versions=list(reversed(versions)),
                  version=got.version, current=got.current_version, writable=_writable(pg, shared), shared=shared,
                  wf_active=got.is_active, **_rollout_context(pg, code))


def _rollout_context(pg: Page, code: str) -> dict[str, Any]:
    """The canary and the shadow run of this workflow (for the caller's tenant), with the shadow report."""
    tenant = pg.caller.tenant_id
    shadow_status = rollouts.status(pg.engine, code, kind="shadow", tenant_id=tenant)
    report = None
    if shadow_status["rollout"] is not None:
        report = shadow.report(pg.engine, pg.request.app.state.runtime.storage, code, tenant_id=tenant, limit=50)
    return {"canary": rollouts.status(pg.engine, code, kind="canary", tenant_id=tenant),
            "shadow_status": shadow_status, "report": report}


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters(pg: Page = PAGE, error_class: str | None = Query(None, max_length=30),
                 workflow: str | None = Query(None, max_length=50),
                 before: int | None = Query(None, ge=1, le=2**53)) -> HTMLResponse:
    """Open dead letters grouped by error class and workflow; retry (on a chosen version) or discard."""
    rows = ops.list_dead_letters(pg.engine, tenant_id=pg.caller.tenant_id, error_class=error_class or None,
                                 workflow=workflow or None, limit=50, before_id=before)
    with pg.engine.connect() as conn:
        groups = dq.dead_letter_groups(conn, pg.caller.tenant_id)
        versions = dq.versions_of(conn, {g["workflow_code"] for g in groups if g["workflow_code"]})
    next_before = rows[-1]["id"] if len(rows) == 50 else None
    params = {"error_class": error_class, "workflow": workflow}
    return render(pg, "dead_letters.html", "dead-letters", "Dead letters", rows=rows, groups=groups,
                  versions=versions, params=params, next_before=next_before)


@router.get("/breakers", response_class=HTMLResponse)
def breakers(pg: Page = PAGE) -> HTMLResponse:
    rows = ops.list_breakers(pg.engine)
    if pg.caller.scope is not None:  # maybe another tenant's failure message
        rows = [{**b, "last_error": None} for b in rows]
    return render(pg, "breakers.html", "breakers", "Circuit breakers", breakers=rows)


@router.get("/workers", response_class=HTMLResponse)
def workers(pg: Page = PAGE) -> HTMLResponse:
    rows = ops.list_workers(pg.engine, include_stopped=True, lease_seconds=pg.settings.lease_seconds,
                            tenant_id=pg.caller.scope)[:200]
    return render(pg, "workers.html", "workers", "Workers", workers=rows)


@router.get("/notifications", response_class=HTMLResponse)
def notifications(pg: Page = PAGE, status: str | None = Query(None, max_length=20),
                  before: int | None = Query(None, ge=1, le=2**53)) -> HTMLResponse:
    """The delivery log (replay) and the channels (test send)."""
    status = status if status in ("pending", "sent", "failed", "cancelled") else None
    with pg.engine.connect() as conn:
        rows = history.list_notifications(conn, tenant_id=pg.caller.tenant_id, status=status, before_id=before,
                                          limit=50)
        chans = channels.list_channels(conn, pg.caller.tenant_id)
    next_before = rows[-1]["id"] if len(rows) == 50 else None
    return render(pg, "notifications.html", "notifications", "Notifications", rows=rows, channels=chans,
                  status=status, next_before=next_before)


@router.get("/alerts", response_class=HTMLResponse)
def alerts(pg: Page = PAGE) -> HTMLResponse:
    """Active alerts, recent history, and the rules in force with their runbooks."""
    settings, scope = pg.request.app.state.runtime.settings, pg.caller.scope
    with pg.engine.connect() as conn:
        active = alerting.alerts_for(settings, conn, scope, state="active", limit=100)
        recent = alerting.alerts_for(settings, conn, scope, state="resolved", limit=30)
        rules = alerting.rules_for(settings, conn, scope)
    runbooks = {r.name: r.runbook for r in rules}
    return render(pg, "alerts.html", "alerts", "Alerts", active=active, recent=recent, rules=rules,
                  runbooks=runbooks)
