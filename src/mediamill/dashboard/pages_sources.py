"""Sources: every watch folder and bucket with its state, and one source's files (skipped ones first)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from mediamill.dashboard.web import Page, page, render
from mediamill.errors import NotFound
from mediamill.sources import service
from mediamill.store import sources_repo

router = APIRouter(include_in_schema=False)
PAGE = Depends(page)


@router.get("/sources", response_class=HTMLResponse)
def sources(pg: Page = PAGE) -> HTMLResponse:
    """Each source: kind, location, workflow, who runs it, waiting reason, files by status, lag, last error;
    and the files sources skipped lately (unreadable or refused)."""
    with pg.engine.connect() as conn:
        views = service.list_views(conn, tenant_id=pg.caller.tenant_id)
        skipped = [{**service.file_view(f), "source": v["name"]} for v in views
                   for f in sources_repo.list_files(conn, v["id"], status="skipped", limit=20)]
    skipped.sort(key=lambda f: f["id"], reverse=True)
    return render(pg, "sources.html", "sources", "Sources", sources=views, skipped=skipped[:50])


@router.get("/sources/{source_id}", response_class=HTMLResponse)
def source_detail(source_id: int, pg: Page = PAGE,
                  status: str | None = Query(None, max_length=80)) -> HTMLResponse:
    """One source: settings, state and its most recent files."""
    try:
        with pg.engine.connect() as conn:
            row = sources_repo.get_source(conn, source_id, tenant_id=pg.caller.tenant_id)
            view = service.public_view(conn, row)
            files = [service.file_view(f) for f in sources_repo.list_files(conn, source_id, status=status, limit=200)]
    except NotFound:
        return render(pg, "missing.html", "sources", "Not found", what=f"source {source_id}")
    return render(pg, "source.html", "sources", f"Source {view['name']}", source=view, files=files, status=status)
