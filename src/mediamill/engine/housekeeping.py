"""Background housekeeping shared by every worker (safe to run in many at once, every write guarded):
rescuing orphaned jobs, ageing waiting jobs, pruning finished ones."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mediamill.engine import wakeup
from mediamill.storage import Storage
from mediamill.store import housekeeping_repo as repo
from mediamill.store import lifecycle as tx
from mediamill.store import liveness, workflow_repo
from mediamill.store.db import Connection, Engine
from mediamill.store.inputs import input_referenced, lock_input
from mediamill.store.timeutil import utcnow

log = logging.getLogger("mediamill.housekeeping")


def rescue_orphaned_jobs(engine: Engine, *, max_rescues: int,
                         on_finish: Callable[[dict[str, Any], str, str, str | None], None] | None = None,
                         limit: int = 100, budget_seconds: float | None = None) -> int:
    """Re-queue jobs whose owner stopped heart-beating; dead-letter a job that did it ``max_rescues`` times.

    Each job is rescued in a transaction of its own, committed before the next one is taken. After a crash
    storm or an outage the backlog of orphans is large, and rescuing it in one transaction takes seconds on a
    busy machine: a rescuer that dies (or loses its connection) before the end would roll all of it back, the
    next rescuer would find a larger backlog still, and jobs would stay orphaned for as long as rescuers keep
    dying. Job by job, every rescue that finished stays done, and rescuers running at once share the backlog
    (``SKIP LOCKED``). At most ``limit`` jobs per pass, and no new one after ``budget_seconds`` (the caller's
    heartbeat must not wait for a long pass: its own leases would lapse). A job put back in its queue wakes the
    idle workers (NOTIFY at commit: with LISTEN they wait for it instead of polling).
    """
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    rescued = 0
    seen: list[int] = []  # each row once per pass, even one whose rescue was refused and left it as it was
    for _ in range(limit):
        if deadline is not None and time.monotonic() >= deadline:
            break
        with engine.begin() as conn:
            row = repo.next_orphan(conn, seen)
            if row is None:
                break
            seen.append(row["id"])
            got = _rescue_one(conn, row["job_id"], row["worker_id"], max_rescues, on_finish)
            if got and row["queue_name"]:
                wakeup.notify_in_tx(conn, [row["queue_name"]])
            rescued += got
    return rescued


@dataclass(frozen=True)
class Lapses:
    """What a heartbeat's look at the leases found: whether a job's or a segment's lease ran out (a rescue is
    due), and the earliest lease that runs out within the horizon (None: none does)."""

    jobs: bool
    segments: bool
    upcoming: datetime | None


def lapsed_leases(conn: Connection, *, horizon_seconds: float) -> Lapses:
    """One statement (four ends of the two partial lease indexes) in the caller's transaction: is a rescue of jobs
    or of segments due, and when does the next lease run out, so the caller comes back exactly then instead of
    polling. In a healthy fleet no lease has run out and the rescues themselves cost nothing."""
    now = utcnow()
    row = repo.lease_ends(conn, now)
    horizon = now + timedelta(seconds=horizon_seconds)
    upcoming = min((t for t in (row["jobs_next"], row["segments_next"]) if t is not None and t < horizon),
                   default=None)
    return Lapses(bool(row["jobs"]), bool(row["segments"]), upcoming)


def _rescue_one(conn: Connection, job_id: int, owner: str | None, max_rescues: int,
                on_finish: Callable[[dict[str, Any], str, str, str | None], None] | None) -> int:
    job = repo.job(conn, job_id)
    if job is None:
        repo.drop_queue_entry(conn, job_id)
        return 0
    now = utcnow()
    reason = f"worker {owner} stopped heart-beating (lease expired)"
    repo.interrupt_running_steps(conn, job_id, now=now, reason=reason)
    rescues = (job["rescue_count"] or 0) + 1
    repo.set_rescue_count(conn, job_id, rescues)
    tx.add_event(conn, job, "rescue", None, {"worker": owner, "rescues": rescues})
    code, wtype, version = workflow_repo.job_workflow(conn, job)
    if job["cancel_requested"] or rescues >= max_rescues:
        poison = not job["cancel_requested"]
        finish = tx.Finish(job=job, status="failed" if poison else "cancelled", workflow_code=code,
                           workflow_type=wtype, workflow_version=version, total_steps=0, poison=poison,
                           error_class="resource" if poison else "cancelled", failed_step=None,
                           error_message=(f"poison job: its run killed the worker {rescues} times" if poison
                                          else "cancelled by request"))
        accepted = tx.finish_jobs(conn, None, [finish])
        if accepted and on_finish:
            on_finish(job, finish.status, code, finish.error_class)
        return 1
    return int(tx.requeue(conn, job=job, worker_id=None, delay=0, reason="rescued", count_retry=False,
                          event={"reason": reason, "rescues": rescues}, keep_place=True))


def mark_and_prune_workers(engine: Engine, *, lease_seconds: float, retention_hours: float) -> tuple[int, int]:
    """Mark workers whose heartbeat is older than the lease ``lost`` (killed, host cut off: they never said
    goodbye), and delete the rows of stopped or lost workers older than the retention. A lost worker that comes
    back heart-beats itself ``running`` again. Returns (marked, pruned)."""
    with engine.begin() as conn:
        return mark_and_prune_workers_on(conn, lease_seconds=lease_seconds, retention_hours=retention_hours)


def mark_and_prune_workers_on(conn: Connection, *, lease_seconds: float, retention_hours: float) -> tuple[int, int]:
    """``mark_and_prune_workers`` in the caller's transaction (a worker's heartbeat)."""
    now = utcnow()
    marked = liveness.mark_lost(conn, now, lease_seconds)
    pruned = 0
    if retention_hours:
        pruned = liveness.prune_dead(conn, now - timedelta(hours=retention_hours))
    if marked:
        log.warning("marked %d worker(s) lost: no heartbeat for %s s", marked, lease_seconds)
    return marked, pruned


def age_waiting_jobs(engine: Engine, *, aging_seconds: float, cap: int = 10) -> int:
    """A queued job gains one priority point per ``aging_seconds`` waited, up to ``cap``: once every waiting job
    has reached the cap, the oldest runs first — so low priority waits at most ``(cap - priority) × aging_seconds``
    behind a stream of higher priority work. The job's own priority (``base_priority``) is kept for retries."""
    with engine.begin() as conn:
        return age_waiting_on(conn, aging_seconds=aging_seconds, cap=cap)


def age_waiting_on(conn: Connection, *, aging_seconds: float, cap: int = 10) -> int:
    """``age_waiting_jobs`` in the caller's transaction (a worker's heartbeat)."""
    return repo.age_waiting(conn, now=utcnow(), aging_seconds=aging_seconds, cap=cap)


def prune_finished_jobs(engine: Engine, storage: Storage, *, days: int, batch: int = 500) -> int:
    """Delete jobs that finished (any terminal state, ``finished_at``) more than ``days`` ago, with their events,
    executions, outputs and files.

    Failed jobs whose dead letter is still open are kept. An input object goes only when nothing
    refers to it any more (another job, an open dead letter, an upload younger than ``days``):
    checked and deleted under the key's lock inside the transaction (see ``store.inputs``).
    """
    cutoff = utcnow() - timedelta(days=days)
    with engine.begin() as conn:
        ids = repo.prunable_jobs(conn, cutoff, limit=batch)
        if not ids:
            return 0
        # with the parts of chunked encodes that were never joined (a cancelled or failed job)
        outputs = repo.output_keys(conn, ids)
        inputs = repo.input_keys(conn, ids)
        repo.delete_jobs(conn, ids)
        _delete_files(storage, outputs + _unreferenced(conn, inputs, cutoff))
    return len(ids)


def _unreferenced(conn: Connection, keys: list[str], cutoff: Any) -> list[str]:
    """The input keys nothing refers to any more, each locked until the transaction ends. Uploads
    that finished before ``cutoff`` go with their last job."""
    free = []
    for key in keys:
        lock_input(conn, key)
        repo.delete_finished_uploads(conn, key, cutoff)
        if not input_referenced(conn, key):
            free.append(key)
    return free


def _delete_files(storage: Storage, keys: list[str]) -> None:
    # inside the transaction: a submit reusing one of these keys waits for it, then finds no reference
    for key in keys:
        try:
            storage.delete(key)
        except Exception:  # a missing file must not stop pruning
            log.warning("prune: could not delete %s", key)
