"""Reprocess the missing parts of finished jobs: re-run only their failed (or skipped, or all) steps,
keeping what the other steps made, as a new run of the same job.

The job goes back to its queue with ``run_number + 1`` and ``rerun = {"run", "steps"}``; the runner
then treats the named steps as not done (their earlier executions stay, untouched) and the other
steps as finished with their recorded outcome. Every run writes new execution records; the job's
final status follows from the steps (all done → ``completed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mediamill.engine import transitions as tx
from mediamill.engine import wakeup
from mediamill.errors import Conflict, InvalidInput, NotFound
from mediamill.statuses import DONE_STEP
from mediamill.store import workflow_repo
from mediamill.store.tables import dead_letters, job_outputs, media_queue, step_executions, workflow_definitions
from mediamill.store.tables import workflow_jobs as wj
from mediamill.store.timeutil import utcnow
from mediamill.workflows.models import StepDef

MODES = ("failed", "skipped", "all")
REPROCESSABLE = ("partial", "failed", "completed", "cancelled")


@dataclass(frozen=True)
class Plan:
    """What one reprocess run does: which steps run again, on which version."""

    job_id: int
    version: int
    steps: list[str]
    queue: str


def _job(conn: Connection, job_id: int, tenant_id: str | None) -> dict[str, Any]:
    q = sa.select(*tx.CLAIM_FIELDS, wj.c.status).where(wj.c.id == job_id)
    if tenant_id is not None:
        q = q.where(wj.c.tenant_id == tenant_id)
    job = conn.execute(q).mappings().first()
    if job is None:
        raise NotFound(f"no job {job_id}")
    if job["status"] not in REPROCESSABLE:
        raise Conflict(f"job {job_id} is {job['status']}; only a finished job (partial, failed, completed, "
                       "cancelled) can be reprocessed")
    return dict(job)


def _last_status(conn: Connection, job_id: int) -> dict[str, str]:
    """The outcome of each step's latest execution, by step name."""
    rows = conn.execute(sa.select(step_executions.c.step_name, step_executions.c.status)
                        .where(step_executions.c.job_id == job_id).order_by(step_executions.c.id)).all()
    return {name: status for name, status in rows if name}


def _same(a: StepDef | None, b: StepDef) -> bool:
    keys = ("action", "params", "when", "needs")
    return a is not None and all(getattr(a, k) == getattr(b, k) for k in keys)


def plan(conn: Connection, job: dict[str, Any], mode: str, version: int | None) -> Plan:
    """Choose the steps to run again (steps that never ran, or changed in a new version, always do)."""
    if mode not in MODES:
        raise InvalidInput(f"steps must be one of {', '.join(MODES)}, got {mode!r}")
    old = workflow_repo.get_workflow(conn, job["workflow_id"], job["workflow_version"]).definition
    new_wf = workflow_repo.get_workflow(conn, job["workflow_id"], version or job["workflow_version"])
    before = {s.name: s for s in old.steps}
    last = _last_status(conn, job["id"])
    chosen = []
    for step in new_wf.definition.steps:
        status = last.get(step.name)
        again = (mode == "all" or status is None or not _same(before.get(step.name), step)
                 or (mode == "failed" and status not in DONE_STEP) or (mode == "skipped" and status == "skipped"))
        if again:
            chosen.append(step.name)
    if not chosen:
        raise Conflict(f"job {job['id']} has no {mode} steps to reprocess")
    return Plan(job["id"], new_wf.version, chosen, new_wf.definition.queue_name)


def _requeue(conn: Connection, job: dict[str, Any], p: Plan, mode: str, by: str | None) -> int:
    now = utcnow()
    run = (job["run_number"] or 1) + 1
    res = conn.execute(wj.update().where(wj.c.id == job["id"], wj.c.status.in_(REPROCESSABLE)).values(
        status="queued", error_message=None, error_class=None, completed_at=None, finished_at=None,
        cancel_requested=False,
        retry_count=0, rescue_count=0, run_number=run, workflow_version=p.version, queue_name=p.queue,
        current_step=0, rerun={"run": run, "steps": p.steps, "mode": mode}, updated_at=now))
    if res.rowcount != 1:
        raise Conflict(f"job {job['id']} changed state; try again")
    # what the re-run steps made before is replaced by what they make now
    conn.execute(job_outputs.delete().where(job_outputs.c.job_id == job["id"],
                                            job_outputs.c.step_name.in_(p.steps)))
    conn.execute(media_queue.delete().where(media_queue.c.job_id == job["id"]))
    conn.execute(media_queue.insert().values(job_id=job["id"], queue_name=p.queue, priority=job["priority"],
                                             base_priority=job["priority"], scheduled_time=now, status="queued",
                                             created_at=now, attempts=0))
    conn.execute(dead_letters.update().where(dead_letters.c.job_id == job["id"], dead_letters.c.resolved_at.is_(None))
                 .values(resolved_at=now, resolution="retried", resolved_by=by))
    tx.add_event(conn, job, "reprocess", None, {"mode": mode, "steps": p.steps, "version": p.version, "run": run,
                                               "by": by})
    tx.add_event(conn, job, "status", None, {"status": "queued", "reason": f"reprocess ({mode} steps)"})
    wakeup.notify_in_tx(conn, [p.queue])
    return run


def reprocess_job(engine: Engine, job_id: int, *, steps: str = "failed", version: int | None = None,
                  tenant_id: str | None = None, by: str | None = None) -> dict[str, Any]:
    """Re-run the ``steps`` (failed | skipped | all) of one finished job; returns the plan."""
    with engine.begin() as conn:
        job = _job(conn, job_id, tenant_id)
        p = plan(conn, job, steps, version)
        run = _requeue(conn, job, p, steps, by)
    wakeup.after_commit([p.queue], engine)
    return {"id": job_id, "status": "queued", "run_number": run, "workflow_version": p.version, "steps": p.steps}


@dataclass(frozen=True)
class Selection:
    """Which finished jobs a bulk reprocess takes."""

    tenant_id: str | None = None
    workflow: str | None = None
    status: tuple[str, ...] = ("partial",)
    step: str | None = None  # only jobs where this step ended in the mode's status
    since: datetime | None = None
    limit: int = 10_000


def select_jobs(conn: Connection, sel: Selection, mode: str) -> list[int]:
    """Ids of the jobs a bulk reprocess would take, oldest first (shadow runs are left alone)."""
    bad = set(sel.status) - set(REPROCESSABLE)
    if bad:
        raise InvalidInput(f"status must be among {', '.join(REPROCESSABLE)}, got {', '.join(sorted(bad))}")
    q = (sa.select(wj.c.id).select_from(wj.join(workflow_definitions, workflow_definitions.c.id == wj.c.workflow_id))
         .where(wj.c.status.in_(sel.status), wj.c.shadow_of.is_(None)))
    if sel.tenant_id is not None:
        q = q.where(wj.c.tenant_id == sel.tenant_id)
    if sel.workflow:
        q = q.where(workflow_definitions.c.workflow_code == sel.workflow)
    if sel.since:
        q = q.where(wj.c.submitted_at >= sel.since)
    if sel.step:
        wanted = {"failed": ("failed", "cancelled", "interrupted"), "skipped": ("skipped",)}.get(mode)
        cond = [step_executions.c.job_id == wj.c.id, step_executions.c.step_name == sel.step]
        if wanted:
            cond.append(step_executions.c.status.in_(wanted))
        q = q.where(sa.exists().where(*cond))
    return list(conn.execute(q.order_by(wj.c.id).limit(sel.limit)).scalars())


def reprocess_jobs(engine: Engine, sel: Selection, *, steps: str = "failed", version: int | None = None,
                   by: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Reprocess every job the selection takes; jobs with nothing to re-run are skipped and counted."""
    if steps not in MODES:
        raise InvalidInput(f"steps must be one of {', '.join(MODES)}, got {steps!r}")
    with engine.connect() as conn:
        ids = select_jobs(conn, sel, steps)
    if dry_run:
        return {"count": len(ids), "skipped": 0, "job_ids": ids[:100], "dry_run": True}
    done, skipped = [], 0
    for job_id in ids:
        try:
            reprocess_job(engine, job_id, steps=steps, version=version, tenant_id=sel.tenant_id, by=by)
            done.append(job_id)
        except (Conflict, NotFound):
            skipped += 1
    return {"count": len(done), "skipped": skipped, "job_ids": done[:100], "dry_run": False}
