"""Chunked parallel encode in the engine: a ``transcode_video`` unit with ``parallel:`` runs on many workers.

Life of a chunked unit (one step, or a fused ladder of ``transcode_video`` steps sharing ``parallel:``):

1. **Split** — the worker running the job probes the source in a step child (keyframes, without decoding)
   and plans N segments cut at source keyframes (``media.chunked``); an input too short to gain from it
   is encoded in one piece as usual. It inserts one ``step_segments`` row per segment plus one for the
   audio track and **parks** the job in the same transaction: the job goes back to its queue
   (``wait_reason = 'segments'``, scheduled ``PARK_SECONDS`` ahead) and its slot is free. A fleet whose
   slots were all taken by waiting parents would deadlock; a parked parent holds nothing.
2. **Segments** — any worker serving the job's queue claims segment rows (before jobs: they finish work
   already started) with the same rules as jobs: ``FOR UPDATE SKIP LOCKED``, a lease extended by the
   heartbeat, every write fenced on ``worker_id = me AND status = 'processing'``. A segment runs in a step
   child, writes its parts to storage and records their keys. A failed segment is retried on its own
   (back-off, the step's retry budget when ``on_failure: retry``); a lost worker's segment is rescued when
   its lease expires and re-runs alone — the others keep their single attempt.
3. **Join** — the last segment to finish wakes the parked job (its queue entry becomes due at once). The
   job is claimed again, finds every segment done and joins each rendition (concat demuxer, ``-c copy``)
   with its audio track, in a step child; the unit's steps complete with the same outputs, names and
   metadata as the single-worker path. Segment parts are then deleted from storage; the rows stay as the
   record of who encoded what. A segment that failed for good fails the unit with its error class, and the
   step's own ``on_failure`` applies (a retry of the step plans afresh).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamill.engine import wakeup
from mediamill.engine.children import Cancelled
from mediamill.engine.outcomes import Parked
from mediamill.errors import MediamillError, ToolFailed, classify_exception, is_retryable_class
from mediamill.storage import new_key
from mediamill.store import lifecycle as tx
from mediamill.store import segments_repo
from mediamill.store.db import Connection, Engine
from mediamill.store.segments_repo import OPEN_STATUSES as _OPEN
from mediamill.store.segments_repo import WAIT_REASON, claim, load_plan, next_due, wake_parent
from mediamill.store.timeutil import utcnow

if TYPE_CHECKING:
    from mediamill.engine.services import RunningJob, RunServices

__all__ = ["NOTE", "PARK_SECONDS", "SEGMENT_RESCUES", "WAIT_REASON", "ChunkJoin", "announce", "claim",
           "extend_leases", "next_due", "prepare", "rescue_orphaned_segments", "run_segment"]

log = logging.getLogger("mediamill.engine")
#: the wake-up note (in-process, and the NOTIFY payload on PostgreSQL) that tells workers segments are due
NOTE = "segments"
#: a parked job re-checks its segments at least this often (a missed wake-up costs no more than this)
PARK_SECONDS = 30.0
#: a segment that killed this many workers in a row is failed (poison), like a job after ``max_rescues``
SEGMENT_RESCUES = 3
PLAN_TIMEOUT = 120.0


# ================================================================== the parent (the job's runner)
@dataclass
class ChunkJoin:
    """A unit whose segments have all finished: join them (or report the segment that failed)."""

    runner: RunningJob
    group: list[int]
    rows: list[dict[str, Any]]
    scratch: Path = field(init=False)

    def __post_init__(self) -> None:
        self.scratch = self.runner.scratch / f"chunks-{self.group[0]}"

    @property
    def failed(self) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["status"] == "failed"), None)

    def execute(self, timeout: float, on_progress: Any) -> list[dict[str, Any]]:
        """Join every rendition of the unit; raise the failed segment's error instead when one failed."""
        bad = self.failed
        if bad is not None:
            self.discard()
            raise ToolFailed(f"segment {bad['seq'] + 1} ({bad['kind']}) failed: {bad['error_message']}",
                             error_class=bad["error_class"] or "internal")
        videos = [r for r in self.rows if r["kind"] == "video"]
        audio = next((r for r in self.rows if r["kind"] == "audio"), None)
        parts = [[str(self._fetch(k, f"s{r['seq']}-{n}")) for n, k in enumerate(r["output_keys"] or [])]
                 for r in videos]
        tracks = [str(self._fetch(k, f"a{n}")) for n, k in enumerate((audio or {}).get("output_keys") or [])]
        r = self.runner
        task = {"chunk": {"op": "join", "source": str(r.chunk_source()[1]), "params": r.unit_params(self.group),
                          "parts": parts, "audio": tracks, "work_dir": str(self.scratch / "join"),
                          "step_dirs": [str(r.scratch / f"step-{i}") for i in self.group], "timeout": timeout},
                "cpu_seconds": int(timeout) + 5}
        reply = r.svc.children.run(task, timeout=timeout + 5, on_progress=on_progress, cancelled=r.cancel)
        if not reply.get("ok"):
            raise ToolFailed(reply.get("message") or "join failed", stderr_tail=reply.get("stderr_tail") or "",
                             error_class=reply.get("error_class") or "internal")
        return list(reply["results"])

    def _fetch(self, key: str, name: str) -> Path:
        storage = self.runner.svc.storage
        local = storage.local_path(key)
        return local if local is not None else storage.get_to_file(key, self.scratch / "parts" / name)

    def cleanup(self) -> None:
        """The unit is recorded: its parts are no longer needed (the rows stay as the record)."""
        _delete_parts(self.runner.svc, self.rows)

    def discard(self) -> None:
        """Set a failed plan aside (a retry of the step plans afresh) and delete its parts."""
        with self.runner.svc.engine.begin() as conn:
            _discard(self.runner.svc, conn, self.rows)


def _discard(w: RunServices, conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Mark a plan's rows ``discarded`` (open ones too: their late results are then refused) and delete
    its parts."""
    segments_repo.discard(conn, [r["id"] for r in rows])
    _delete_parts(w, rows)


def _delete_parts(w: RunServices, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        for key in row.get("output_keys") or []:
            with contextlib.suppress(Exception):  # cleanup is best effort; retention removes what is left
                w.storage.delete(key)


def prepare(runner: RunningJob, group: list[int], timeout: float) -> ChunkJoin | Parked | None:
    """For a ``parallel:`` unit: the join to run (all segments finished), None to encode in one piece, or
    ``Parked`` (the job is back in its queue) while segments are planned or still running."""
    step = runner.steps[group[0]]
    if step.parallel is None or runner.job.get("shadow_of"):
        return None
    w = runner.svc
    with w.engine.begin() as conn:
        runner.guard(conn)
        rows = load_plan(conn, runner.job, step.name)
        if rows and (rows[0]["task"] or {}).get("steps") != [runner.steps[i].name for i in group]:
            stale, rows = rows, []  # planned for another composition of the unit: plan it afresh
            _discard(runner.svc, conn, stale)
        if rows and any(r["status"] in _OPEN for r in rows):
            _park(runner, conn, {"step": step.name, "reason": "segments still running",
                                 "open": sum(r["status"] in _OPEN for r in rows)})
    if rows:
        if any(r["status"] in _OPEN for r in rows):
            return _parked(runner)
        return ChunkJoin(runner, group, rows)
    return _split(runner, group, timeout)


def _split(runner: RunningJob, group: list[int], timeout: float) -> Parked | None:
    step = runner.steps[group[0]]
    key, source = runner.chunk_source()
    params = runner.unit_params(group)
    try:
        reply = runner.svc.children.run({"chunk": {"op": "plan", "source": str(source), "params": params,
                                                 "parallel": step.parallel}, "cpu_seconds": int(PLAN_TIMEOUT)},
                                      timeout=PLAN_TIMEOUT, on_progress=lambda _i, _p: None, cancelled=runner.cancel)
    except MediamillError as exc:  # the one-piece encode reports the input's problem with its own step record
        log.info("step %s: not split (%s)", step.name, exc.message)
        return None
    segments = reply.get("segments") or [] if reply.get("ok") else []
    if len(segments) < 2:
        log.info("step %s: encoded in one piece (%s)", step.name, reply.get("reason") or reply.get("message"))
        return None
    retries = runner.d.step_retries(step) if step.on_failure == "retry" else 0
    task = {"source_key": key, "params": params, "timeout": timeout, "steps": [runner.steps[i].name for i in group]}
    rows = [_row(runner, step.name, "video", n, seg, task, retries) for n, seg in enumerate(segments)]
    rows.append(_row(runner, step.name, "audio", 0, {}, task, retries))
    with runner.svc.engine.begin() as conn:
        runner.guard(conn)
        segments_repo.insert_plan(conn, rows)
        _park(runner, conn, {"step": step.name, "reason": "split", "segments": len(segments),
                             "frames": reply.get("frames"), "duration": reply.get("duration")})
    return _parked(runner)


def _row(runner: RunningJob, step_name: str, kind: str, seq: int, spec: dict[str, Any], task: dict[str, Any],
         retries: int) -> dict[str, Any]:
    job = runner.job
    return {"job_id": job["id"], "tenant_id": job["tenant_id"], "step_name": step_name,
            "run_number": job["run_number"] or 1, "kind": kind, "seq": seq, "spec": spec, "task": task,
            "queue_name": job["queue_name"], "priority": job["priority"], "status": "queued",
            "scheduled_time": utcnow(), "attempts": 0, "max_attempts": retries + 1, "created_at": utcnow()}


def _park(runner: RunningJob, conn: Connection, event: dict[str, Any]) -> None:
    from mediamill.engine.services import LostClaim

    runner.releasing = True  # the claim is given up: the heartbeat must not take its end for a loss
    if not tx.requeue(conn, job=runner.job, worker_id=runner.svc.worker_id, delay=PARK_SECONDS,
                      reason=WAIT_REASON, count_retry=False, event=event):
        raise LostClaim()


def _parked(runner: RunningJob) -> Parked:
    announce(runner.svc, 0)  # segments are waiting for workers
    runner.svc.wake_later(runner.job["queue_name"], PARK_SECONDS)
    return Parked()


def announce(w: RunServices, delay: float) -> None:
    """Tell the workers of this process and (NOTIFY, or the SQLite wake socket) of others that segments are
    due in ``delay`` seconds."""
    def go() -> None:
        wakeup.notify_local([NOTE])
        w.wake_later(NOTE, 0)

    timer = threading.Timer(max(0.0, delay), go)
    timer.daemon = True
    timer.start()


# ================================================================== segments (any worker)
def extend_leases(conn: Connection, *, worker_id: str, lease_seconds: float, ids: list[int]) -> None:
    """Extend the lease of the worker's running segments among ``ids`` by ``lease_seconds`` from now."""
    if ids:
        segments_repo.extend_leases(conn, worker_id=worker_id, until=tx.lease_until(lease_seconds), ids=ids)


def run_segment(w: RunServices, row: dict[str, Any], stopping: threading.Event) -> None:
    """Encode one claimed segment in a step child, store its parts, record the outcome (fenced).
    ``stopping`` set (the worker is stopping past its grace period): the segment is handed back."""
    scratch = w.scratch_dir / f"segment-{row['id']}-{row['attempts']}"
    began = time.monotonic()
    try:
        keys = _encode(w, row, scratch, stopping)
    except Cancelled:
        _hand_back(w, row)
        return
    except MediamillError as exc:
        _failed(w, row, exc)
        return
    except Exception as exc:  # classified like a step's unexpected error
        _failed(w, row, classify_exception(exc))
        return
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    values = {"status": "completed", "output_keys": keys, "completed_at": utcnow(), "lease_expires_at": None,
              "duration_ms": round((time.monotonic() - began) * 1000), "error_class": None, "error_message": None}
    with w.engine.begin() as conn:
        done = segments_repo.finish(conn, row, w.worker_id, values)
    if not done:
        log.warning("segment %s of job %s: this worker lost its claim; dropping its parts", row["seq"], row["job_id"])
        _delete_parts(w, [{"output_keys": keys}])
        return
    w.wake_later(row["queue_name"], 0)


def _hand_back(w: RunServices, row: dict[str, Any]) -> None:
    """Give a segment back unfinished: queued again at once, the attempt this claim counted taken back."""
    with w.engine.begin() as conn:
        segments_repo.hand_back(conn, row["id"], w.worker_id)
    log.info("segment %s of job %s handed back by a stopping worker", row["seq"], row["job_id"])
    announce(w, 0)


def _encode(w: RunServices, row: dict[str, Any], scratch: Path, stopping: threading.Event) -> list[str]:
    task = row["task"]
    timeout = float(task["timeout"])
    local = w.storage.local_path(task["source_key"])
    source = local if local is not None else w.storage.get_to_file(task["source_key"], scratch / "source")
    op = {"op": "segment" if row["kind"] == "video" else "audio", "source": str(source), "params": task["params"],
          "segment": row["spec"], "work_dir": str(scratch / "out"), "timeout": timeout}
    reply = w.children.run({"chunk": op, "cpu_seconds": int(timeout) + 5,
                            "log": {"job_id": row["job_id"], "step": row["step_name"], "worker": w.worker_id}},
                           timeout=timeout + 5, on_progress=lambda _i, _p: None, cancelled=stopping)
    if not reply.get("ok"):
        raise ToolFailed(reply.get("message") or "segment failed", stderr_tail=reply.get("stderr_tail") or "",
                         error_class=reply.get("error_class") or "internal")
    keys = []
    for f in reply["files"]:
        path = Path(f)
        keys.append(w.storage.put_file(new_key("segments", row["tenant_id"] or "default", suffix=path.suffix), path,
                                       move=True).key)
    return keys


def _failed(w: RunServices, row: dict[str, Any], exc: MediamillError) -> None:
    again = is_retryable_class(exc.error_class) and row["attempts"] < (row["max_attempts"] or 1)
    delay = w.retry_policy.next_delay(row["attempts"] - 1) if again else 0.0
    values: dict[str, Any] = {"error_class": exc.error_class, "error_message": exc.message[:4000],
                              "lease_expires_at": None, "completed_at": None if again else utcnow()}
    if again:
        values.update(status="queued", worker_id=None, scheduled_time=utcnow() + timedelta(seconds=delay))
    else:
        values.update(status="failed")
    log.warning("segment %s of job %s failed (%s: %s)%s", row["seq"], row["job_id"], exc.error_class, exc.message,
                "; retried" if again else "")
    with w.engine.begin() as conn:
        segments_repo.finish(conn, row, w.worker_id, values)
    if again:
        announce(w, delay)
    else:
        w.wake_later(row["queue_name"], 0)  # the parked job reports the failure


def rescue_orphaned_segments(engine: Engine) -> int:
    """Segments whose worker stopped heart-beating go back to the queue (alone: the others are untouched);
    one that killed ``SEGMENT_RESCUES`` workers fails, and its job is woken to report it."""
    now = utcnow()
    with engine.begin() as conn:
        rows = segments_repo.orphaned(conn, now, limit=100)
        for row in rows:
            poison = row["attempts"] >= (row["max_attempts"] or 1) + SEGMENT_RESCUES - 1
            values: dict[str, Any] = {"worker_id": None, "lease_expires_at": None}
            if poison:
                values.update(status="failed", error_class="resource", completed_at=now,
                              error_message=f"the segment's run killed its worker {row['attempts']} times")
            else:
                values.update(status="queued", scheduled_time=now, error_class="worker_lost",
                              error_message=f"worker {row['worker_id']} stopped heart-beating (lease expired)")
            segments_repo.release(conn, row["id"], values)
            tx.add_event(conn, {"id": row["job_id"], "tenant_id": row["tenant_id"]}, "rescue", row["step_name"],
                         {"segment": row["seq"], "worker": row["worker_id"], "failed": poison})
            if poison:
                wake_parent(conn, row)
    return len(rows)
