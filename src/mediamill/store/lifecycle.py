"""Guarded job transitions. Every write that a worker makes about a job it runs is conditioned on its claim
(``fence``): ``media_queue.worker_id = me AND status = 'processing' AND attempts = <the claim's attempt>``, so
that a late or rescued worker can never overwrite a job that was finished, cancelled or re-claimed elsewhere
(the River #1302 race) -- nor a job it re-claimed itself after a rescue, while its earlier run is still alive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.errors import EVENT_MESSAGE
from mediamill.statuses import SUCCEEDED_JOB
from mediamill.store import outbox
from mediamill.store.bulk import in_ids, insert_many
from mediamill.store.job_rows import CLAIM_FIELDS
from mediamill.store.tables import (
    dead_letters,
    job_events,
    job_outputs,
    media_queue,
    queues,
    step_executions,
    workers,
    workflow_jobs,
)
from mediamill.store.timeutil import iso, utcnow

mq, wj, se = media_queue, workflow_jobs, step_executions

CLAIM_ATTEMPT = "claim_attempt"  # key on a claimed job's dict: the ``media_queue.attempts`` its claim set

SUBJECTS = {"completed": "Processing Complete", "partial": "Processing Partially Complete",
            "failed": "Processing Failed", "cancelled": "Processing Cancelled"}
_TYPE_NOUN = {"video": "Video", "image": "Image", "audio": "Audio", "document": "Document",
              "video_analysis": "Video Analysis"}


@dataclass
class Claimed:
    queue_id: int
    attempts: int
    job: dict[str, Any]
    deferred: bool = False  # not marked processing: meant to finish in memory (the fast path)
    marked: bool = True  # the job row says processing (else the runner's first write marks it)
    #: only locked by the claim's transaction, its queue entry untouched: the job must be finished in that same
    #: transaction (``finish_held``) or claimed for real (``claim_held``) before it commits
    held: bool = False


@dataclass
class StepRecord:
    """A step execution to insert (inline steps are recorded at the end, in the job's final batch)."""

    step_id: int
    step_name: str
    action: str
    status: str
    started_at: datetime
    completed_at: datetime | None
    retry_attempt: int = 0
    error_message: str | None = None
    error_class: str | None = None
    stderr_tail: str | None = None
    output_data: str | None = None
    run_number: int = 1


@dataclass
class Finish:
    """A job's terminal outcome, written in one guarded transaction."""

    job: dict[str, Any]
    status: str  # completed | partial | failed | cancelled
    workflow_code: str
    workflow_type: str
    workflow_version: int
    total_steps: int
    steps: list[StepRecord] = field(default_factory=list)
    error_message: str | None = None
    error_class: str | None = None
    stderr_tail: str | None = None
    failed_step: str | None = None
    poison: bool = False
    outputs: list[dict[str, Any]] | None = None  # visible outputs when known (None: read them)


def lease_until(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


# ----------------------------------------------------------------------------- claim
def claim(conn: Connection, *, worker_id: str, queue: str | None, limit: int, lease_seconds: float,
          mark: bool = True, hold: Callable[[dict[str, Any], int], bool] | None = None) -> list[Claimed]:
    """Claim up to ``limit`` due entries, best priority first (FOR UPDATE SKIP LOCKED on PostgreSQL).

    With ``mark=False`` the jobs are not marked ``processing`` (``Claimed.deferred``): a job on the normal path
    is marked by its runner's first write (``processing_values``, ``processing_event``), in-memory jobs never
    are (their one write is the final one). Until then the job row still says ``queued`` while its queue row
    is held (cancellation treats such a job as running).

    ``hold(job, attempt)`` (PostgreSQL, with ``mark=False``): the jobs it says yes to are only locked, their queue
    entries left as they are (``Claimed.held``) — the row lock of the claim's transaction is their lease, which
    a crash gives back by itself. They must be finished in that transaction (``finish_held``) or claimed for
    real (``claim_held``) before it commits. A job that finishes in memory then costs its queue entry one
    write, the delete, instead of an update (a row version and three index entries) and the delete.
    """
    if hold is not None and conn.dialect.name == "postgresql" and not mark:
        return _claim_holding(conn, worker_id=worker_id, queue=queue, limit=limit, lease_seconds=lease_seconds,
                              hold=hold)
    now = utcnow()
    picked = (_due_pick(queue, limit, now) if conn.dialect.name == "postgresql"
              else mq.c.id.in_(_due(queue, limit, now).scalar_subquery()))
    values = dict(status="processing", worker_id=worker_id, picked_up_at=now,
                  lease_expires_at=now + timedelta(seconds=lease_seconds), attempts=mq.c.attempts + 1, wait_reason=None)
    if conn.dialect.name == "postgresql":
        # one statement: the claim returns its jobs' rows (UPDATE … FROM workflow_jobs … RETURNING)
        result = conn.execute(mq.update().where(picked, mq.c.job_id == wj.c.id).values(**values)
                              .returning(mq.c.id.label("queue_id"), mq.c.attempts.label("queue_attempts"),
                                         mq.c.priority.label("queue_priority"), mq.c.scheduled_time.label("queue_due"),
                                         wj.c.status.label("job_status"), *CLAIM_FIELDS))
        names = list(result.keys())[5:]  # the job's fields, after the queue entry's four and the job's status
        got = result.all()
        rows = [(r[0], r[5], r[1], r[2], r[3]) for r in got]  # (names[0] is the job's id)
        jobs = [dict(zip(names, r[5:], strict=True)) for r in got if r[4] in ("queued", "pending")]
    else:
        rows = [(r.id, r.job_id, r.attempts, r.priority, r.scheduled_time) for r in conn.execute(
            mq.update().where(picked).values(**values).returning(mq.c.id, mq.c.job_id, mq.c.attempts,
                                                                 mq.c.priority, mq.c.scheduled_time)).all()]
        jobs = [dict(j) for j in conn.execute(sa.select(*CLAIM_FIELDS).where(
            in_ids(conn, wj.c.id, [r[1] for r in rows]), wj.c.status.in_(("queued", "pending")))).mappings()] \
            if rows else []
    if not rows:
        return []
    by_job = {job_id: (queue_id, attempts) for queue_id, job_id, attempts, _p, _d in rows}
    live = {j["id"] for j in jobs}
    orphans = [queue_id for queue_id, job_id, *_rest in rows if job_id not in live]
    # in the queue's order (RETURNING gives the rows in no particular order): a worker starts them in this order
    place = {job_id: (-(priority or 0), due, queue_id) for queue_id, job_id, _a, priority, due in rows}
    jobs.sort(key=lambda j: place[j["id"]])
    if orphans:  # the job was finished or cancelled behind the queue's back
        conn.execute(mq.delete().where(in_ids(conn, mq.c.id, orphans)))
    deferred = set() if mark else {j["id"] for j in jobs}
    for j in jobs:
        j["started_at"] = j["started_at"] or now
        j[CLAIM_ATTEMPT] = by_job[j["id"]][1]  # what every later write of this run is fenced on
    mark_processing(conn, [j for j in jobs if j["id"] not in deferred], worker_id,
                    {j["id"]: by_job[j["id"]][1] for j in jobs}, now)
    return [Claimed(by_job[j["id"]][0], by_job[j["id"]][1], j, j["id"] in deferred, j["id"] not in deferred)
            for j in jobs]


def _due(queue: str | None, limit: int, now: datetime) -> Any:
    """The ids of the best ``limit`` due entries (of ``queue``, or any); a pause takes effect at once, in every
    process."""
    pick = (sa.select(mq.c.id).where(mq.c.status == "queued", mq.c.scheduled_time <= now)
            .order_by(mq.c.priority.desc(), mq.c.scheduled_time, mq.c.id).limit(limit))
    if queue is not None:
        pick = pick.where(mq.c.queue_name == queue)
    return pick.where(~sa.exists().where(queues.c.name == mq.c.queue_name, queues.c.paused.is_(True)))


def _due_pick(queue: str | None, limit: int, now: datetime) -> Any:
    """``_due``'s entries locked (PostgreSQL, ``FOR UPDATE SKIP LOCKED``) as an InitPlan: ``= ANY(ARRAY(...))``
    runs the locking pick exactly once. As ``IN (subquery)`` a nested-loop plan (chosen when statistics say the
    queue is small) re-runs it per scanned row, each rescan skipping the rows the statement already updated,
    and one claim takes the whole backlog."""
    return mq.c.id == sa.any_(sa.func.array(_due(queue, limit, now).with_for_update(skip_locked=True)
                                            .scalar_subquery()))


def _claim_holding(conn: Connection, *, worker_id: str, queue: str | None, limit: int, lease_seconds: float,
                   hold: Callable[[dict[str, Any], int], bool]) -> list[Claimed]:
    now = utcnow()
    result = conn.execute(sa.select(mq.c.id.label("queue_id"), mq.c.attempts.label("queue_attempts"),
                                    mq.c.priority.label("queue_priority"), mq.c.scheduled_time.label("queue_due"),
                                    wj.c.status.label("job_status"), *CLAIM_FIELDS)
                          .select_from(mq.join(wj, wj.c.id == mq.c.job_id)).where(_due_pick(queue, limit, now)))
    names = list(result.keys())[5:]
    got = sorted(result.all(), key=lambda r: (-(r[2] or 0), r[3], r[0]))  # the queue's order
    orphans = [r[0] for r in got if r[4] not in ("queued", "pending")]
    if orphans:  # the job was finished or cancelled behind the queue's back
        conn.execute(mq.delete().where(in_ids(conn, mq.c.id, orphans)))
    out: list[Claimed] = []
    for r in got:
        if r[4] not in ("queued", "pending"):
            continue
        job = dict(zip(names, r[5:], strict=True))
        attempt = (r[1] or 0) + 1  # what a claim counts (the entry keeps its count unless claimed for real)
        job["started_at"] = job["started_at"] or now
        job[CLAIM_ATTEMPT] = attempt
        out.append(Claimed(r[0], attempt, job, deferred=True, marked=False, held=hold(job, attempt)))
    claim_held(conn, [c for c in out if not c.held], worker_id=worker_id, lease_seconds=lease_seconds, now=now)
    return out


def claim_held(conn: Connection, claimed: Sequence[Claimed], *, worker_id: str, lease_seconds: float,
               now: datetime | None = None) -> None:
    """Claim for real entries this transaction holds (``claim(hold=…)``): processing, ours, leased, the attempt
    counted — as ``claim`` marks its entries. They then follow the ordinary path."""
    if not claimed:
        return
    now = now or utcnow()
    conn.execute(mq.update().where(in_ids(conn, mq.c.id, [c.queue_id for c in claimed]))
                 .values(status="processing", worker_id=worker_id, picked_up_at=now,
                         lease_expires_at=now + timedelta(seconds=lease_seconds), attempts=mq.c.attempts + 1,
                         wait_reason=None))


def finish_held(conn: Connection, worker_id: str, finishes: Sequence[Finish], queue_ids: Sequence[int]) -> None:
    """Write terminal outcomes of jobs whose entries this transaction holds (``claim(hold=…)``): nothing to
    fence — the row locks are ours until the commit — so the entries are deleted by id."""
    if not finishes:
        return
    conn.execute(mq.delete().where(in_ids(conn, mq.c.id, list(queue_ids))))
    _write_finishes(conn, finishes, worker_id)


def next_due(conn: Connection, queue: str | None) -> datetime | None:
    """When the earliest queued entry (of ``queue``, or any) becomes due, paused queues left out."""
    q = sa.select(sa.func.min(mq.c.scheduled_time)).where(mq.c.status == "queued")
    if queue is not None:
        q = q.where(mq.c.queue_name == queue)
    q = q.where(~sa.exists().where(queues.c.name == mq.c.queue_name, queues.c.paused.is_(True)))
    return conn.execute(q).scalar()


def processing_values(job: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The job row's values when a worker starts running it (see ``mark_processing``)."""
    return {"status": "processing", "started_at": sa.func.coalesce(wj.c.started_at, job.get("started_at") or now),
            "updated_at": now}


def processing_event(job: dict[str, Any], worker_id: str, attempt: int, now: datetime) -> dict[str, Any]:
    """The ``status: processing`` event of a job a worker starts running (see ``mark_processing``)."""
    return {"job_id": job["id"], "tenant_id": job["tenant_id"], "event_type": "status", "created_at": now,
            "step_name": None, "data": {"status": "processing", "worker": worker_id, "attempt": attempt}}


def mark_processing(conn: Connection, jobs: Sequence[dict[str, Any]], worker_id: str, attempts: dict[int, int],
                    now: datetime | None = None) -> None:
    """Record that claimed jobs are running: status, started_at and a status event."""
    if not jobs:
        return
    now = now or utcnow()
    conn.execute(wj.update().where(in_ids(conn, wj.c.id, [j["id"] for j in jobs]))
                 .values(status="processing", started_at=sa.func.coalesce(wj.c.started_at, now), updated_at=now))
    insert_many(conn, job_events, [
        {"job_id": j["id"], "tenant_id": j["tenant_id"], "event_type": "status", "created_at": now,
         "data": {"status": "processing", "worker": worker_id, "attempt": attempts.get(j["id"], 1)}} for j in jobs])


def release(conn: Connection, *, worker_id: str, queue_ids: Sequence[int]) -> int:
    """Give back claimed entries that were never started (claimed deferred, not marked processing): they keep
    their place (priority, time in the queue) and the attempt the claim counted is taken back."""
    if not queue_ids:
        return 0
    res = conn.execute(mq.update().where(in_ids(conn, mq.c.id, list(queue_ids)), mq.c.worker_id == worker_id,
                                         mq.c.status == "processing")
                       .values(status="queued", worker_id=None, lease_expires_at=None, picked_up_at=None,
                               attempts=mq.c.attempts - 1))
    return res.rowcount


# ----------------------------------------------------------------------------- ownership
def fence(conn: Connection, worker_id: str | None, jobs: Sequence[dict[str, Any]]) -> list[Any]:
    """The condition on ``media_queue`` under which anything about these claimed jobs is written.

    A worker writes only while each job's claim is still the one it made: the row is processing, its own, and
    at the attempt the claim counted (``CLAIM_ATTEMPT`` on the job's dict). The worker id alone is not enough:
    after a rescue the same worker may claim the job again while its earlier run is still alive, and that stale
    run must find every write refused. ``worker_id=None`` is housekeeping acting on a lapsed claim, whoever held it.
    """
    guard: list[Any] = [mq.c.status == "processing"]
    if worker_id is None:
        return [*guard, in_ids(conn, mq.c.job_id, [j["id"] for j in jobs])]
    by_attempt: dict[int, list[int]] = {}
    for j in jobs:  # a job dict that never came from a claim has no attempt: a KeyError, not an unfenced write
        by_attempt.setdefault(int(j[CLAIM_ATTEMPT]), []).append(j["id"])
    return [*guard, mq.c.worker_id == worker_id,
            sa.or_(*(sa.and_(mq.c.attempts == attempt, in_ids(conn, mq.c.job_id, ids))
                     for attempt, ids in by_attempt.items()))]


def still_owner(conn: Connection, *, job: dict[str, Any], worker_id: str, lease_seconds: float) -> bool:
    """Check the claim is still ours and extend its lease (the guard of every step write)."""
    res = conn.execute(mq.update().where(*fence(conn, worker_id, [job]))
                       .values(lease_expires_at=lease_until(lease_seconds)))
    return res.rowcount == 1


def heartbeat(conn: Connection, *, worker_id: str, lease_seconds: float, claims: dict[int, int], status: str,
              jobs_done: int) -> tuple[set[int], set[int]]:
    """A worker's heartbeat: extend the leases of the claims it works on (job id -> attempt, fenced like every
    write: a claim it lost track of, or an earlier attempt of a job it claimed again, expires) and stamp its
    ``workers`` row.

    Returns (the jobs whose claim is still ours, those of them with a cancellation requested). On PostgreSQL
    this is one statement whatever the number of jobs; the lease rows stay locked until commit, so writes
    made later in the same transaction about those jobs are fenced too.
    """
    now = utcnow()
    stamp = workers.update().where(workers.c.id == worker_id).values(heartbeat_at=now, status=status,
                                                                      jobs_done=jobs_done)
    if not claims:
        conn.execute(stamp)
        return set(), set()
    jobs = [{"id": job_id, CLAIM_ATTEMPT: attempt} for job_id, attempt in claims.items()]
    extend = mq.update().where(*fence(conn, worker_id, jobs)).values(
        lease_expires_at=now + timedelta(seconds=lease_seconds))
    if conn.dialect.name == "postgresql":
        leases = extend.returning(mq.c.job_id).cte("leases")
        beat = stamp.returning(workers.c.id).cte("beat")
        rows = conn.execute(sa.select(leases.c.job_id, wj.c.cancel_requested)
                            .select_from(leases.join(wj, wj.c.id == leases.c.job_id)).add_cte(beat)).all()
    else:
        conn.execute(extend)
        conn.execute(stamp)
        rows = conn.execute(sa.select(mq.c.job_id, wj.c.cancel_requested).join(wj, wj.c.id == mq.c.job_id)
                            .where(*fence(conn, worker_id, jobs))).all()
    return {r.job_id for r in rows}, {r.job_id for r in rows if r.cancel_requested}


@dataclass
class Progress:
    """One job's progress to record: the job's percentage, its running steps' (execution id -> percent), and
    the progress events to append (step name, job percent, step percent)."""

    job: dict[str, Any]
    percent: float
    steps: dict[int, float]
    events: list[tuple[str, float, float]]


def write_progress(conn: Connection, batch: Sequence[Progress]) -> None:
    """Record the progress of many jobs at once: one UPDATE of the jobs, one of the step executions and one
    insert of the events. The caller has confirmed (and locked) the claims in this transaction (``heartbeat``)."""
    if not batch:
        return
    conn.execute(wj.update().where(in_ids(conn, wj.c.id, [p.job["id"] for p in batch]))
                 .values(progress_percent=sa.case({p.job["id"]: round(p.percent, 2) for p in batch},
                                                  value=wj.c.id)))
    steps = {exec_id: pct for p in batch for exec_id, pct in p.steps.items()}
    if steps:
        conn.execute(se.update().where(in_ids(conn, se.c.id, list(steps)))
                     .values(progress_percent=sa.case({i: round(pct, 1) for i, pct in steps.items()},
                                                      value=se.c.id)))
    now = utcnow()
    insert_many(conn, job_events, [
        {"job_id": p.job["id"], "tenant_id": p.job["tenant_id"], "event_type": "progress", "step_name": name,
         "created_at": now, "data": {"percent": round(job_pct, 1), "step_percent": round(step_pct, 1)}}
        for p in batch for name, job_pct, step_pct in p.events])


# ----------------------------------------------------------------------------- steps
def open_execution(conn: Connection, *, job: dict[str, Any], step_id: int, step_name: str, action: str,
                   attempt: int, worker_id: str) -> int:
    """Insert a running step execution; its event and the job row are the caller's (the runner's ``_start``
    writes them for all the steps of a unit at once)."""
    return int(conn.execute(se.insert().values(
        job_id=job["id"], step_id=step_id, status="running", started_at=utcnow(), retry_attempt=attempt,
        action=action, step_name=step_name, worker_id=worker_id, run_number=job["run_number"] or 1,
        progress_percent=0).returning(se.c.id)).scalar_one())


def event_row(job: dict[str, Any], event_type: str, step_name: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """A ``job_events`` row for ``insert_many`` (several events in one statement)."""
    return {"job_id": job["id"], "tenant_id": job["tenant_id"], "event_type": event_type, "step_name": step_name,
            "data": data, "created_at": utcnow()}


def finish_step(conn: Connection, *, job: dict[str, Any], exec_id: int, step_name: str, status: str,
                started_at: datetime | None, output_data: str | None = None, error_message: str | None = None,
                error_class: str | None = None, stderr_tail: str | None = None,
                outputs: Sequence[dict[str, Any]] = (), progress: float | None = None,
                touch_job: bool = True, at: datetime | None = None) -> None:
    """Close a step execution (with its outputs and event) as of ``at`` (now by default: a completion written
    with a later transaction keeps its own time); ``touch_job=False`` when the job's row is written in the same
    transaction anyway (the job's final write, a requeue)."""
    now = at or utcnow()
    start = started_at or now
    duration = (now - start).total_seconds()
    conn.execute(se.update().where(se.c.id == exec_id).values(
        status=status, completed_at=now, duration_seconds=round(duration), duration_ms=round(duration * 1000),
        output_data=output_data, error_message=error_message, error_class=error_class, stderr_tail=stderr_tail,
        progress_percent=100 if status == "completed" else None))
    if outputs:
        names = [o["name"] for o in outputs]
        conn.execute(job_outputs.delete().where(job_outputs.c.job_id == job["id"], job_outputs.c.name.in_(names)))
        conn.execute(job_outputs.insert(), [{**o, "job_id": job["id"], "step_execution_id": exec_id,
                                             "step_name": step_name, "tenant_id": job["tenant_id"],
                                             "created_at": now} for o in outputs])
    values: dict[str, Any] = {"updated_at": now}
    if progress is not None:
        values["progress_percent"] = round(progress, 2)
    if touch_job:
        conn.execute(wj.update().where(wj.c.id == job["id"]).values(**values))
    data: dict[str, Any] = {"status": status, "execution_id": exec_id, "duration_ms": round(duration * 1000)}
    if error_message:
        data.update(error_class=error_class, error=error_message[:EVENT_MESSAGE])
    if outputs:
        data["outputs"] = [o["name"] for o in outputs]
    add_event(conn, job, "step", step_name, data)


def add_event(conn: Connection, job: dict[str, Any], event_type: str, step_name: str | None,
              data: dict[str, Any]) -> None:
    conn.execute(job_events.insert().values(job_id=job["id"], tenant_id=job["tenant_id"], event_type=event_type,
                                            step_name=step_name, data=data, created_at=utcnow()))


# ----------------------------------------------------------------------------- requeue
def requeue(conn: Connection, *, job: dict[str, Any], worker_id: str | None, delay: float, reason: str,
            event: dict[str, Any], count_retry: bool, keep_place: bool = False) -> bool:
    """Put a claimed job back in its queue with its own priority (a retry never loses priority).

    ``keep_place``: a job that did nothing wrong (rescued from a lost worker, handed back by a stopping one,
    released unstarted) keeps its place: its queue row's priority (aged or not) and its time in the queue are
    left as they were, so it runs before the jobs that arrived after it. A retry or a hold waits ``delay``.
    """
    now = utcnow()
    back: dict[str, Any] = {"status": "queued", "worker_id": None, "lease_expires_at": None,
                            "wait_reason": reason[:50]}
    if not keep_place:
        back.update(scheduled_time=now + timedelta(seconds=delay), priority=job["priority"],
                    base_priority=None if job.get("shadow_of") else job["priority"], aged_at=None)
    res = conn.execute(mq.update().where(*fence(conn, worker_id, [job])).values(**back))
    if res.rowcount != 1:
        return False
    values: dict[str, Any] = {"status": "queued", "updated_at": now}
    if count_retry:
        values["retry_count"] = wj.c.retry_count + 1
    conn.execute(wj.update().where(wj.c.id == job["id"]).values(**values))
    add_event(conn, job, "retry" if count_retry else "wait", None, {**event, "delay_seconds": round(delay, 3)})
    add_event(conn, job, "status", None, {"status": "queued", "reason": reason})
    return True


# ----------------------------------------------------------------------------- finish
def finish_jobs(conn: Connection, worker_id: str | None, finishes: Sequence[Finish],
                before: Callable[[], None] | None = None) -> list[int]:
    """Write terminal outcomes for jobs we still own; returns the ids accepted (others are refused).

    ``before``: writes of the same transaction that need the claim (a last step's completion), made once the
    claim is confirmed and before the final status is written."""
    if not finishes:
        return []
    owned = set(conn.execute(mq.delete().where(*fence(conn, worker_id, [f.job for f in finishes]))
                             .returning(mq.c.job_id)).scalars())
    accepted = [f for f in finishes if f.job["id"] in owned]
    if accepted and before is not None:
        before()
    if accepted:
        _write_finishes(conn, accepted, worker_id)
    return [f.job["id"] for f in accepted]


def _write_finishes(conn: Connection, finishes: Sequence[Finish], worker_id: str | None) -> None:
    now = utcnow()
    groups: dict[tuple[Any, ...], list[int]] = {}
    for f in finishes:  # one UPDATE per distinct outcome, not one per job
        done = f.status in SUCCEEDED_JOB
        key = (f.status, f.total_steps if done else None, f.error_message, f.error_class, f.job.get("started_at"))
        groups.setdefault(key, []).append(f.job["id"])
    for (status, current, error, klass, started), ids in groups.items():
        done = status in SUCCEEDED_JOB
        # completed_at keeps its narrow meaning (completed or partial); finished_at marks every terminal state
        values: dict[str, Any] = {"status": status, "error_message": error, "error_class": klass, "updated_at": now,
                                  "completed_at": now if done else None, "finished_at": now,
                                  "started_at": sa.func.coalesce(wj.c.started_at, started)}
        if done:
            values.update(progress_percent=100, current_step=current)
        waiting = _unindexed(wj.c.status).in_(("processing", "queued"))
        conn.execute(wj.update().where(in_ids(conn, wj.c.id, ids), waiting).values(**values))
    steps = [(f.job, s) for f in finishes for s in f.steps]
    if steps:
        for job, s in steps:
            s.run_number = job.get("run_number") or 1
        insert_many(conn, se, [_step_row(job, s, worker_id) for job, s in steps])
    insert_many(conn, job_events, [
        {"job_id": f.job["id"], "tenant_id": f.job["tenant_id"], "event_type": "status", "created_at": now,
         "data": {"status": f.status, "final": True, "error_class": f.error_class,
                  "error": (f.error_message or "")[:EVENT_MESSAGE] or None}} for f in finishes])
    # shadow runs notify nobody and leave no dead letter: their failure never touches the primary
    outbox.add_events(conn, [_outbox_row(conn, f, _dead_letter(conn, f) if f.status == "failed" else None)
                             for f in finishes if not f.job.get("shadow_of")])


def _unindexed(column: Any) -> Any:
    """``column`` in a guard the planner must not drive a lookup by: ``id = ANY(batch) AND status IN (waiting)``,
    with statistics that say few jobs wait (most are finished), was planned as a scan of every waiting job's
    entry in the (status, priority) index, filtered by id — a finish batch cost the whole backlog (19,800 entries
    read for 200 jobs with 20,000 waiting beside 1,000,000 finished ones). Wrapped, only the ids are looked up."""
    return sa.func.coalesce(column, "")


def _step_row(job: dict[str, Any], s: StepRecord, worker_id: str | None) -> dict[str, Any]:
    dur = (s.completed_at - s.started_at).total_seconds() if s.completed_at else None
    return {"job_id": job["id"], "step_id": s.step_id, "status": s.status, "started_at": s.started_at,
            "completed_at": s.completed_at, "retry_attempt": s.retry_attempt, "action": s.action,
            "step_name": s.step_name, "worker_id": worker_id, "error_message": s.error_message,
            "error_class": s.error_class, "stderr_tail": s.stderr_tail, "output_data": s.output_data,
            "run_number": s.run_number, "duration_seconds": round(dur) if dur is not None else None,
            "duration_ms": round(dur * 1000) if dur is not None else None,
            "progress_percent": 100 if s.status == "completed" else None}


def attempt_history(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(se.c.step_name, se.c.action, se.c.status, se.c.retry_attempt, se.c.run_number,
                                  se.c.started_at, se.c.completed_at, se.c.error_class, se.c.error_message,
                                  se.c.worker_id)
                        .where(se.c.job_id == job_id).order_by(se.c.id)).mappings().all()
    return [{**{k: v for k, v in r.items() if k not in ("started_at", "completed_at")},
             "started_at": iso(r["started_at"]), "completed_at": iso(r["completed_at"])} for r in rows]


def _dead_letter(conn: Connection, f: Finish) -> int:
    return int(conn.execute(dead_letters.insert().values(
        job_id=f.job["id"], tenant_id=f.job["tenant_id"], workflow_code=f.workflow_code,
        workflow_version=f.workflow_version, failed_step=f.failed_step, error_class=f.error_class,
        error_message=f.error_message, stderr_tail=f.stderr_tail, attempts=attempt_history(conn, f.job["id"]),
        input_key=f.job.get("input_key"), created_at=utcnow()).returning(dead_letters.c.id)).scalar_one())


def job_payload(job: dict[str, Any], *, status: str, workflow_code: str, workflow_version: int,
                error_class: str | None = None, error_message: str | None = None,
                outputs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    now = utcnow()
    started = job.get("started_at")
    return {
        "job_id": job["id"], "job_code": job["job_code"], "workflow_code": workflow_code,
        "workflow_version": workflow_version, "status": status, "priority": job.get("priority"),
        "submitted_by": job.get("submitted_by"), "tenant_id": job.get("tenant_id"),
        "error_class": error_class, "error_message": error_message, "started_at": iso(started),
        "completed_at": iso(now) if status in SUCCEEDED_JOB else None, "finished_at": iso(now),
        "duration_seconds": round((now - started).total_seconds(), 3) if started else None,
        "outputs": list(outputs), "metadata": job.get("job_metadata") or {}, "notify": job.get("notify"),
        "input_filename": job.get("input_filename"), "request_id": job.get("request_id"),
    }


def _outbox_row(conn: Connection, f: Finish, dl_id: int | None) -> dict[str, Any]:
    outs: list[dict[str, Any]] = []
    if f.status in SUCCEEDED_JOB:
        outs = f.outputs if f.outputs is not None else [dict(r) for r in conn.execute(
            sa.select(job_outputs.c.name, job_outputs.c.mime_type, job_outputs.c.bytes, job_outputs.c.delivered_url)
            .where(job_outputs.c.job_id == f.job["id"], job_outputs.c.visible.is_(True))).mappings()]
    payload = job_payload(f.job, status=f.status, workflow_code=f.workflow_code,
                          workflow_version=f.workflow_version, error_class=f.error_class,
                          error_message=f.error_message, outputs=outs)
    if dl_id is not None:
        payload["dead_letter_id"] = dl_id
    event_type = "job.dead_lettered" if f.poison else f"job.{f.status}"
    noun = _TYPE_NOUN.get(f.workflow_type, "Media")
    subject = f"{noun} {SUBJECTS[f.status]}" if f.status != "failed" else SUBJECTS["failed"]
    name = f.job.get("input_filename") or f.job["job_code"]
    message = (f"Your {noun.lower()} {name} has been processed successfully." if f.status == "completed"
               else f"{noun} processing {f.status}: {f.error_message or ''}".strip())
    return outbox.event_row(event_type=event_type, tenant_id=f.job["tenant_id"], job_id=f.job["id"],
                            payload=payload, subject=subject, message=message)


# ----------------------------------------------------------------------------- a runner's own records
def interrupt_running_steps(conn: Connection, job_id: int, now: datetime, reason: str) -> None:
    """Mark the job's running step executions interrupted (a run handed back or cut short)."""
    conn.execute(step_executions.update()
                 .where(step_executions.c.job_id == job_id, step_executions.c.status == "running")
                 .values(status="interrupted", completed_at=now, error_message=reason, error_class="interrupted"))


def step_history(conn: Connection, job_id: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """The job's step executions (step id, name, status, run number, output data; oldest first) and its
    outputs (every ``job_outputs`` column), for a run that picks up where earlier ones left."""
    rows = conn.execute(sa.select(step_executions.c.step_id, step_executions.c.step_name, step_executions.c.status,
                                  step_executions.c.run_number, step_executions.c.output_data)
                        .where(step_executions.c.job_id == job_id).order_by(step_executions.c.id)).all()
    outs = conn.execute(sa.select(job_outputs).where(job_outputs.c.job_id == job_id)).mappings().all()
    return list(rows), [dict(o) for o in outs]


def update_job(conn: Connection, job_id: int, values: dict[str, Any]) -> None:
    """Set columns of the job's row (the caller fenced the write on its claim)."""
    conn.execute(wj.update().where(wj.c.id == job_id).values(**values))


def delete_executions(conn: Connection, ids: Sequence[int]) -> None:
    """Remove step executions that were opened with a unit and did no work of their own."""
    conn.execute(step_executions.delete().where(in_ids(conn, step_executions.c.id, list(ids))))


def add_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``job_events`` rows (dicts of column → value; a missing key is NULL, not the default)."""
    insert_many(conn, job_events, rows)


def record_execution(conn: Connection, values: dict[str, Any]) -> None:
    """Insert a finished step execution (a skipped step: no start of its own)."""
    conn.execute(step_executions.insert().values(**values))


def show_outputs(conn: Connection, job_id: int) -> None:
    """Make the job's outputs visible (``finalize_job`` publishes them at once)."""
    conn.execute(job_outputs.update().where(job_outputs.c.job_id == job_id).values(visible=True))
