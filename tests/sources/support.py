"""Helpers for the sources tests: create sources, read what they took, write files slowly."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mediamill.runtime import Runtime
from mediamill.sources import service
from mediamill.store import sources_repo
from mediamill.store.tables import source_files, workflow_jobs


def add_source(rt: Runtime, **data: Any) -> dict[str, Any]:
    data.setdefault("workflow", "WF-INTAKE")
    with rt.engine.begin() as conn:
        return service.create(conn, rt.settings, tenant_id="default", data=data)


def source_row(rt: Runtime, source_id: int) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        return sources_repo.get_source(conn, source_id)


def jobs_by_path(rt: Runtime) -> dict[str, list[int]]:
    """Every job sources created, by the file it came from (a path with two jobs is a double take)."""
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(workflow_jobs.c.id, workflow_jobs.c.job_metadata)
                            .where(workflow_jobs.c.submitted_by.like("source:%"))).all()
    out: dict[str, list[int]] = {}
    for job_id, meta in rows:
        out.setdefault(meta["source"]["path"], []).append(job_id)
    return out


def files(rt: Runtime, source_id: int) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(source_files).where(source_files.c.source_id == source_id)
                                              .order_by(source_files.c.id)).mappings()]


def write_slowly(path: Path, *, chunks: int, pause: float, size: int = 4096) -> threading.Thread:
    """Grow a file chunk by chunk in the background (a slow upload or a long copy)."""

    def run() -> None:
        with path.open("wb") as fh:
            for i in range(chunks):
                fh.write(bytes([65 + i % 26]) * size)
                fh.flush()
                time.sleep(pause)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
