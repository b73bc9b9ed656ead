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

from mediamill.engine import wakeup
from mediamill.errors import Conflict, InvalidInput, NotFound
from mediamill.statuses import DONE_STEP
from mediamill.store import lifecycle as tx
from mediamill.store import reprocess_repo, workflow_repo
from mediamill.store.db import Connection, Engine
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
    job = reprocess_repo.job_with_status(conn, job_id, tenant_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if job["status"] not in REPROCESSABLE:
        raise Conflict(f"job {job_id} is {job['status']}; only a finished job (partial, failed, completed, "
                       "cancelled) can be reprocessed")
    return job


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
    last = reprocess_repo.last_step_statuses(conn, job["id"])
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
    if not reprocess_repo.requeue_run(conn, job, from_statuses=REPROCESSABLE, run=run, version=p.version,
                                      queue=p.queue, steps=p.steps, mode=mode, by=by, now=now):
        raise Conflict(f"job {job['id']} changed state; try again")
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
    wanted = {"failed": ("failed", "cancelled", "interrupted"), "skipped": ("skipped",)}.get(mode) if sel.step else None
    return reprocess_repo.reprocessable_job_ids(conn, statuses=sel.status, tenant_id=sel.tenant_id,
                                                workflow=sel.workflow, since=sel.since, step=sel.step,
                                                step_statuses=wanted, limit=sel.limit)


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
