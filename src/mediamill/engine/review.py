"""The review queue's way out: jobs that routing could not place wait (``pending`` in queue ``review``)
until someone routes them to a workflow — same id, same input — and they are counted while they wait."""

from __future__ import annotations

from typing import Any

from mediamill.engine import wakeup
from mediamill.engine.routing import candidates_for, visible_workflows
from mediamill.errors import Conflict, NotFound, UnsupportedFormat
from mediamill.media.sniff import accepts, canonical
from mediamill.store import lifecycle as tx
from mediamill.store import routing_repo, workflow_repo
from mediamill.store.db import Connection, Engine
from mediamill.store.routing_repo import REVIEW_QUEUE
from mediamill.store.timeutil import utcnow


def _waiting_review(conn: Connection, job_id: int, tenant_id: str | None) -> dict[str, Any]:
    job = routing_repo.job_for_review(conn, job_id, tenant_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if job["status"] != "pending" or job["queue_name"] != REVIEW_QUEUE:
        raise Conflict(f"job {job_id} is {job['status']} in queue {job['queue_name']}; only a job waiting in "
                       "review can be routed (a finished job is retried or reprocessed instead)")
    return job


def route_job(engine: Engine, job_id: int, workflow: str, *, version: int | None = None,
              tenant_id: str | None = None, by: str | None = None) -> dict[str, Any]:
    """Move a job waiting in review into ``workflow``'s queue with its input, keeping its id."""
    with engine.begin() as conn:
        job = _waiting_review(conn, job_id, tenant_id)
        if workflow not in visible_workflows(conn, job["tenant_id"]):
            raise NotFound(f"no active workflow {workflow!r}")
        wf = workflow_repo.current_workflow(conn, workflow, version)
        mime = job["input_mime"]
        if mime and not accepts(wf.definition.input_types, mime):
            raise UnsupportedFormat(f"workflow {workflow} accepts {', '.join(wf.definition.input_types)}; the "
                                    f"file is {canonical(mime)}")
        queue = wf.definition.queue_name
        routing = {**(job["routing"] or {}), "decision": "manual", "workflow": workflow, "by": by,
                   "reason": f"routed from review by {by or 'an operator'}"}
        _requeue(conn, job, wf, queue, routing)
        tx.add_event(conn, job, "routing", None, {**routing, "version": wf.version})
        tx.add_event(conn, job, "status", None, {"status": "queued", "workflow": workflow, "version": wf.version,
                                                 "queue": queue, "reason": "routed from review"})
        wakeup.notify_in_tx(conn, [queue])
    wakeup.after_commit([queue], engine)
    return {"id": job_id, "status": "queued", "workflow": workflow, "workflow_version": wf.version, "queue": queue,
            "routing": routing}


def _requeue(conn: Connection, job: dict[str, Any], wf: workflow_repo.VersionedWorkflow, queue: str,
             routing: dict[str, Any]) -> None:
    if not routing_repo.route_out_of_review(conn, job, workflow_id=wf.workflow_id, version=wf.version, queue=queue,
                                            routing=routing, now=utcnow()):
        raise Conflict(f"job {job['id']} changed state; try again")


def review_candidates(engine: Engine, job: dict[str, Any]) -> list[str]:
    """Workflows a review job could go to: those accepting its type first, then every other active one."""
    with engine.connect() as conn:
        fitting = candidates_for(conn, job["tenant_id"], job.get("input_mime"))
        others = [c for c in visible_workflows(conn, job["tenant_id"]) if c not in fitting]
    return fitting + others if not job.get("input_mime") else fitting or others
