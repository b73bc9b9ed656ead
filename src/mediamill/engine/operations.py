"""Operator actions and reads shared by the CLI, the API and the dashboard: cancel, priority, retry,
queues, workers, dead letters, breakers, job detail and listings."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from mediamill.engine import tenancy, wakeup
from mediamill.engine.breakers import reset_breaker as _reset_breaker
from mediamill.errors import Conflict, InvalidInput, NotFound
from mediamill.statuses import TERMINAL_JOB
from mediamill.store import breakers_repo, job_rows, liveness, workflow_repo
from mediamill.store import lifecycle as tx
from mediamill.store import operations_repo as repo
from mediamill.store.db import Connection, Engine
from mediamill.store.delivery_repo import job_outputs_of
from mediamill.store.routing_repo import REVIEW_QUEUE, review_backlog
from mediamill.store.timeutil import iso, utcnow


def _job_row(conn: Connection, job_id: int, tenant_id: str | None) -> dict[str, Any]:
    row = repo.job_row(conn, job_id, tenant_id)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


# ----------------------------------------------------------------------------- cancel / priority
def cancel_job(engine: Engine, job_id: int, *, tenant_id: str | None = None, by: str | None = None) -> str:
    """Cancel a job: at once when it waits; a running job's step child is killed by its worker."""
    with engine.begin() as conn:
        job = _job_row(conn, job_id, tenant_id)
        status = job["status"]
        if status in TERMINAL_JOB:
            raise Conflict(f"job {job_id} is already {status}")
        # a claimed job is running even while its row still says queued (its runner marks it at its first write)
        held = repo.queue_status(conn, job_id) == "processing"
        if status == "processing" or held:
            repo.request_cancel(conn, job_id)
            tx.add_event(conn, job, "cancel_requested", None, {"by": by})
            wakeup.notify_in_tx(conn, [str(job_id)], channel=wakeup.CANCEL_CHANNEL)
            return "cancelling"
        code, wtype, version = workflow_repo.job_workflow(conn, job)
        # a queued job has no owner: finish it directly, guarded on its status
        if not repo.cancel_waiting(conn, job_id):
            raise Conflict(f"job {job_id} changed state; try again")
        finish = tx.Finish(job=job, status="cancelled", workflow_code=code, workflow_type=wtype,
                           workflow_version=version, total_steps=0, error_message=f"cancelled by {by or 'request'}",
                           error_class="cancelled")
        tx._write_finishes(conn, [finish], None)
    return "cancelled"


def change_priority(engine: Engine, job_id: int, priority: int, *, tenant_id: str | None = None) -> None:
    if not 0 <= priority <= 100:
        raise InvalidInput(f"priority must be between 0 and 100, got {priority}")
    with engine.begin() as conn:
        job = _job_row(conn, job_id, tenant_id)
        if job["status"] in TERMINAL_JOB:
            raise Conflict(f"job {job_id} is {job['status']}; its priority can no longer change")
        repo.set_priority(conn, job_id, priority)
        tx.add_event(conn, job, "priority", None, {"from": job["priority"], "to": priority})
        wakeup.notify_in_tx(conn, [job["queue_name"] or ""])
    wakeup.after_commit([job["queue_name"] or ""], engine)


# ----------------------------------------------------------------------------- retry / DLQ
def _requeue_finished(conn: Connection, job: dict[str, Any], *, version: int | None, by: str | None) -> None:
    """Put a finished job back in its queue as a new run (resumes at the failed step on the same version)."""
    now = utcnow()
    values: dict[str, Any] = {"status": "queued", "error_message": None, "error_class": None, "completed_at": None,
                              "finished_at": None,
                              "cancel_requested": False, "retry_count": 0, "rescue_count": 0,
                              "run_number": (job["run_number"] or 1) + 1, "updated_at": now}
    queue = job["queue_name"]
    if version is not None and version != job["workflow_version"]:
        wf = workflow_repo.get_workflow(conn, job["workflow_id"], version)
        values.update(workflow_version=version, current_step=0, progress_percent=0, rerun=None)
        queue = wf.definition.queue_name
        values["queue_name"] = queue
        _drop_outputs(conn, job["id"])
    if not repo.reopen_finished(conn, job["id"], values):
        raise Conflict(f"job {job['id']} is not finished; only failed, partial or cancelled jobs can be retried")
    repo.drop_queue_entries(conn, job["id"])
    job_rows.enqueue(conn, job["id"], queue=queue, priority=job["priority"], now=now)
    tx.add_event(conn, job, "retry", None, {"manual": True, "by": by, "version": version or job["workflow_version"]})
    tx.add_event(conn, job, "status", None, {"status": "queued", "reason": "manual retry"})
    wakeup.notify_in_tx(conn, [queue])
    job["queue_name"] = queue


def _drop_outputs(conn: Connection, job_id: int) -> None:
    repo.drop_outputs(conn, job_id)


def retry_job(engine: Engine, job_id: int, *, tenant_id: str | None = None, version: int | None = None,
              by: str | None = None) -> None:
    with engine.begin() as conn:
        job = _job_row(conn, job_id, tenant_id)
        if job["status"] == "pending" and job["queue_name"] == REVIEW_QUEUE:
            raise Conflict(f"job {job_id} waits in review, it has not run: route it to a workflow "
                           f"(mediamill route {job_id} WORKFLOW, or POST /v1/jobs/{job_id}/route)")
        _requeue_finished(conn, job, version=version, by=by)
        repo.resolve_open_of_job(conn, job_id, resolution="retried", by=by)
    wakeup.after_commit([job["queue_name"] or ""], engine)


def _dl_row(conn: Connection, dl_id: int, tenant_id: str | None) -> dict[str, Any]:
    row = repo.dead_letter(conn, dl_id, tenant_id)
    if row is None:
        raise NotFound(f"no dead letter {dl_id}")
    return row


def retry_dead_letter(engine: Engine, dl_id: int, *, version: int | None = None, tenant_id: str | None = None,
                      by: str | None = None) -> int:
    """Retry one dead-lettered job (on its own version unless another is chosen); returns the job id."""
    with engine.begin() as conn:
        row = _dl_row(conn, dl_id, tenant_id)
        if row["resolved_at"] is not None:
            raise Conflict(f"dead letter {dl_id} was already {row['resolution']}")
        job = _job_row(conn, row["job_id"], tenant_id)
        _requeue_finished(conn, job, version=version, by=by)
        repo.resolve_open(conn, dl_id, resolution="retried", by=by)
    wakeup.after_commit([job["queue_name"] or ""], engine)
    return int(row["job_id"])


def retry_dead_letters(engine: Engine, *, error_class: str | None = None, workflow: str | None = None,
                       version: int | None = None, tenant_id: str | None = None, by: str | None = None) -> int:
    """Retry every open dead letter matching the filter; returns how many."""
    with engine.connect() as conn:
        ids = repo.open_dead_letter_ids(conn, tenant_id=tenant_id, error_class=error_class, workflow=workflow)
    done = 0
    for dl_id in ids:
        try:
            retry_dead_letter(engine, dl_id, version=version, tenant_id=tenant_id, by=by)
            done += 1
        except (Conflict, NotFound):
            continue
    return done


def discard_dead_letter(engine: Engine, dl_id: int, *, tenant_id: str | None = None, by: str | None = None) -> None:
    with engine.begin() as conn:
        row = _dl_row(conn, dl_id, tenant_id)
        if row["resolved_at"] is not None:
            raise Conflict(f"dead letter {dl_id} was already {row['resolution']}")
        repo.resolve(conn, dl_id, resolution="discarded", by=by)


def list_dead_letters(engine: Engine, *, tenant_id: str | None = None, error_class: str | None = None,
                      workflow: str | None = None, include_resolved: bool = False, limit: int = 50,
                      before_id: int | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = repo.dead_letter_page(conn, tenant_id=tenant_id, error_class=error_class, workflow=workflow,
                                     include_resolved=include_resolved, before_id=before_id, limit=min(limit, 500))
    return [_jsonable(r) for r in rows]


# ----------------------------------------------------------------------------- queues / workers / breakers
def set_queue_paused(engine: Engine, name: str, paused: bool) -> None:
    with engine.begin() as conn:
        repo.set_paused(conn, name, paused)
        if not paused:
            wakeup.notify_in_tx(conn, [name])
    if not paused:
        wakeup.after_commit([name], engine)


def pause_queue(engine: Engine, name: str, *, tenant_id: str | None = None) -> None:
    """Pause a queue; ``tenant_id`` (not the root view) must own it (see engine.tenancy)."""
    _check_may_pause(engine, name, tenant_id)
    set_queue_paused(engine, name, True)


def resume_queue(engine: Engine, name: str, *, tenant_id: str | None = None) -> None:
    _check_may_pause(engine, name, tenant_id)
    set_queue_paused(engine, name, False)


def _check_may_pause(engine: Engine, name: str, tenant_id: str | None) -> None:
    if tenant_id is not None:
        with engine.connect() as conn:
            tenancy.check_may_pause(conn, name, tenant_id=tenant_id, root=False)


def queue_stats(engine: Engine, *, tenant_id: str | None = None) -> list[dict[str, Any]]:
    """Depth, waiting, processing and oldest wait per queue (reads only the live queue rows).

    With ``tenant_id``: the tenant's queues only, counting its own jobs (engine.tenancy)."""
    now = utcnow()
    with engine.connect() as conn:
        rows = repo.queue_figures(conn, now, tenant_id)
        paused = repo.paused_by_queue(conn)
        if tenant_id is None:
            known = repo.workflow_queue_names(conn)
            known |= set(paused)
        else:
            known = tenancy.visible_queues(conn, tenant_id)
        in_review, review_since = review_backlog(conn)
    out = {r["queue_name"]: {"name": r["queue_name"], "depth": r["depth"], "waiting": r["waiting"],
                             "processing": r["processing"], "scheduled": r["scheduled"],
                             "oldest_wait_seconds": round((now - _dt(r["oldest"])).total_seconds(), 3)
                             if r["oldest"] else 0.0, "paused": bool(paused.get(r["queue_name"], False))}
           for r in rows}
    for name in known - set(out):
        out[name] = {"name": name, "depth": 0, "waiting": 0, "processing": 0, "scheduled": 0,
                     "oldest_wait_seconds": 0.0, "paused": bool(paused.get(name, False))}
    if in_review or REVIEW_QUEUE in out:  # review jobs wait for a person, not in media_queue
        out[REVIEW_QUEUE] = {**out.get(REVIEW_QUEUE, {"name": REVIEW_QUEUE, "processing": 0, "scheduled": 0,
                                                       "paused": False}),
                             "depth": in_review, "waiting": in_review,
                             "oldest_wait_seconds": round((now - _dt(review_since)).total_seconds(), 3)
                             if review_since else 0.0}
    return sorted(out.values(), key=lambda r: r["name"] or "")


def list_workers(engine: Engine, *, lease_seconds: float, include_stopped: bool = False,
                 tenant_id: str | None = None) -> list[dict[str, Any]]:
    """Workers, newest first, with ``state``: ``live`` (or ``stopping``) while their heartbeat is newer than the
    lease (the liveness rule of ``store.liveness``), ``stopped`` when they said goodbye, ``lost`` when their
    heartbeat stopped without one (killed, host cut off) — ``status`` is what the worker last wrote, or ``lost``
    once the housekeeping marked it.

    With ``tenant_id``: those serving the tenant's queues, its own running jobs only, no install-wide
    figures (engine.tenancy)."""
    with engine.connect() as conn:
        rows = repo.all_workers(conn)
        busy = repo.running_jobs_by_worker(conn, tenant_id)
        visible = tenancy.visible_queues(conn, tenant_id) if tenant_id is not None else None
    now = utcnow()
    out = []
    for r in rows:
        alive = liveness.is_alive(r["status"], _dt(r["heartbeat_at"]) if r["heartbeat_at"] else None, now,
                                  lease_seconds)
        seen = tenancy.worker_view(r, visible)
        if seen is not None and (alive or include_stopped):
            out.append(_jsonable({**seen, "alive": alive, "state": _worker_state(r["status"], alive),
                                  "running_jobs": busy.get(r["id"], 0)}))
    return out


def _worker_state(status: str | None, alive: bool) -> str:
    if alive:
        return "stopping" if status == "stopping" else "live"
    return "stopped" if status == "stopped" else "lost"


def live_workers_serving(engine: Engine, queue: str, *, lease_seconds: float) -> list[str]:
    """Ids of the live workers that claim from ``queue`` (a pool of that name, or ``*``)."""
    return [w["id"] for w in list_workers(engine, lease_seconds=lease_seconds)
            if isinstance(w.get("pools"), dict) and (queue in w["pools"] or "*" in w["pools"])]


def list_breakers(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [_jsonable(r) for r in breakers_repo.every(conn)]


def reset_breaker(engine: Engine, action: str) -> None:
    with engine.begin() as conn:
        if not _reset_breaker(conn, action):
            raise NotFound(f"no breaker for action {action!r}")


# ----------------------------------------------------------------------------- reads
def get_job(engine: Engine, job_id: int, *, tenant_id: str | None = None, events_limit: int = 500) -> dict[str, Any]:
    """A job with its steps (executions), outputs and events."""
    with engine.connect() as conn:
        job = repo.job_with_code(conn, job_id, tenant_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        steps = repo.executions_of(conn, job_id)
        outputs = job_outputs_of(conn, job_id)
        events = repo.events_of(conn, job_id, limit=events_limit)
        dead = repo.latest_dead_letter(conn, job_id)
    out = _jsonable(job)
    out.pop("idempotency_hash", None)
    out["steps"] = [_jsonable(s) for s in steps]
    out["outputs"] = [_jsonable(o) for o in outputs]
    out["events"] = [_jsonable(e) for e in events]
    out["dead_letter"] = _jsonable(dead) if dead else None
    return out


def list_jobs(engine: Engine, *, tenant_id: str | None = None, status: str | None = None,
              workflow: str | None = None, queue: str | None = None, submitter: str | None = None,
              since: datetime | None = None, until: datetime | None = None, limit: int = 50,
              before_id: int | None = None, search: str | None = None,
              shadow: bool = False) -> list[dict[str, Any]]:
    """Jobs, newest first, keyset-paged by id (``before_id``); shadow runs only when ``shadow`` (then only they)."""
    with engine.connect() as conn:
        rows = repo.job_list(conn, tenant_id=tenant_id, status=status, workflow=workflow, queue=queue,
                             submitter=submitter, since=since, until=until, before_id=before_id, search=search,
                             shadow=shadow, limit=max(1, min(limit, 500)))
    return [_jsonable(r) for r in rows]


# ----------------------------------------------------------------------------- helpers
def _dt(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value  # type: ignore[no-any-return]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            out[k] = iso(v)
        elif hasattr(v, "as_tuple"):  # Decimal
            out[k] = float(v)
        elif k in ("input_metadata", "output_data", "output_metadata") and isinstance(v, str):
            try:
                out[k] = json.loads(v)
            except ValueError:
                out[k] = v
        else:
            out[k] = v
    return out
