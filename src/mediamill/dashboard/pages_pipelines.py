"""Pages for changing pipelines safely: routing rules (drag to reorder, a live explain box)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from mediamill.dashboard.web import Page, page, render
from mediamill.engine.routing import visible_workflows
from mediamill.store import routing_repo

router = APIRouter(include_in_schema=False)
PAGE = Depends(page)


@router.get("/routing", response_class=HTMLResponse)
def routing(pg: Page = PAGE) -> HTMLResponse:
    """The tenant's routing rules in evaluation order, a form to add one, and the explain box."""
    with pg.engine.connect() as conn:
        rules = routing_repo.list_rules(conn, pg.caller.tenant_id)
        workflows = visible_workflows(conn, pg.caller.tenant_id)
    return render(pg, "routing.html", "routing", "Routing rules", rules=rules, workflows=workflows)
