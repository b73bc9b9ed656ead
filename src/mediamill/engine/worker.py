"""The worker: claims jobs from its pools, runs them, keeps its leases alive, rescues others' orphans.

Background roles share one small protocol (a thread with a stop event):
- ``Claimer``  claims batches in priority order when slots are free; waits on NOTIFY / in-process wake-ups
- ``Writer``   writes fast-path outcomes of many jobs in one transaction (batched acks)
- ``Lifeline`` one transaction per beat: the heartbeat (every lease extended and the ``workers`` row stamped
               in one statement), the progress of every running job, cancellations missed, a look at the
               leases (rescues run only when one ran out, at the next expiry), rollout guards, ageing waiting
               jobs, marking dead workers; prunes old jobs
- ``Canceller`` looks up cancellations when a NOTIFY says so (polls without LISTEN)
- ``Listener`` (PostgreSQL reached directly) LISTEN for new work and cancellations

Chatter budget (PostgreSQL, default settings): an idle worker makes one transaction per heartbeat (a third of
the lease) plus a safety claim per lease; a running step adds at most one progress write per
``progress_seconds``, shared by all of the worker's jobs; a one-step job on the normal path costs three
transactions (claim; start; the step's completion with the job's finish). ``benchmarks/chatter.py`` measures it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from mediamill import __version__, telemetry
from mediamill.engine import housekeeping, rollouts, segments, wakeup
from mediamill.engine import transitions as tx
from mediamill.engine.breakers import BreakerConfig, Breakers
from mediamill.engine.children import ChildPool
from mediamill.engine.inline import FastRetry, fast_eligible, run_fast
from mediamill.engine.outcomes import retry_event
from mediamill.engine.retry import RetryPolicy
from mediamill.engine.runner import JobRunner
from mediamill.fsmode import private_dir
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from mediamill.store.db import listen_available
from mediamill.store.tables import workers as workers_t
from mediamill.store.tables import workflow_jobs
from mediamill.store.timeutil import utcnow

log = logging.getLogger("mediamill.worker")
ANY = "*"
# How much work a worker takes at once. In-process (fast path) jobs run one after another in the claimer thread,
# so one claim takes about FAST_BATCH_SECONDS of them, sized from their measured time (trivial jobs: up to
# `claim_batch`; slower ones: fewer, so the rest stay in the queue for other workers). Jobs that need the normal
# path (child processes) are held only for free slots: there is no prefetch, because a job waiting inside one
# worker is invisible to idle workers, and a freed slot claims again at once (a round trip, not a job's time).
FAST_BATCH_SECONDS = 0.25
FAST_COST_WEIGHT = 0.2
# Cancellations reach a PostgreSQL worker by NOTIFY; the poll is then only a safety net (a notification can be
# missed while the listener reconnects, which also triggers a check). Without LISTEN (SQLite, or PgBouncer in
# transaction mode where the listener cannot hold its session) the running jobs are polled.
# A worker that found no segment of a chunked encode looks again after this long, unless told of new ones sooner
# (NOTIFY on PostgreSQL, in-process on SQLite): fleets without chunked work spend about no statement on them.
SEGMENT_POLL_SECONDS = 2.0
CANCEL_POLL_SECONDS = 0.2
CANCEL_POLL_SECONDS_PG = 1.0  # PostgreSQL without LISTEN (PgBouncer): a second, not five polls a second
LIFELINE_TICK = 0.25  # how often the lifeline looks whether a beat is due (in memory; no statement)


class Worker:
    """One worker process's engine. ``start()`` runs it in background threads; ``stop()`` drains it."""

    def __init__(self, runtime: Runtime, *, pools: dict[str, int] | None = None, name: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.engine = runtime.engine
        self.storage = runtime.storage
        self.pools = dict(pools or self.settings.parsed_pools() or {ANY: 2})
        host = socket.gethostname()
        self.worker_id = f"{name or host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.scratch_dir = Path(self.settings.data_dir).resolve() / "scratch" / self.worker_id
        self.retry_policy = RetryPolicy(self.settings.retry_base_seconds, self.settings.retry_max_seconds)
        self.breakers = Breakers(self.engine, BreakerConfig(
            window_seconds=self.settings.breaker_window_seconds, min_calls=self.settings.breaker_min_calls,
            failure_rate=self.settings.breaker_failure_rate, cooldown_seconds=self.settings.breaker_cooldown_seconds))
        slots = sum(self.pools.values())
        self.children = ChildPool(size=self.settings.child_pool_size or slots, max_tasks=self.settings.child_max_tasks,
                                  limits=self.settings.limits)
        self.executor = ThreadPoolExecutor(max_workers=slots + 2, thread_name_prefix="mm-job")
        self.inflight: dict[str, int] = defaultdict(int)
        self.running: dict[int, JobRunner] = {}
        self._owned: dict[int, int] = {}  # claims still in hand (job id -> attempt): only their leases are extended
        self._owned_segments: set[int] = set()  # claimed segments of chunked encodes still in hand
        self._segments_next: dict[str, float] = {}  # pool -> when to look for segments again (monotonic)
        self._segment_cancels: dict[int, threading.Event] = {}  # running segment -> set to hand it back
        self.fast_hint: dict[str, bool] = defaultdict(bool)
        self.fast_cost: dict[str, float] = {}  # pool -> moving average of one in-process job's seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancel_check = threading.Event()
        self._listening = threading.Event()  # LISTEN is up: cancellations arrive by NOTIFY
        self._cancel_noted = 0.0  # when the last cancel notification arrived (monotonic)
        self._next_due = float("inf")  # when the earliest delayed job or segment of our pools is due (monotonic)
        self._threads: list[threading.Thread] = []
        self._pending: list[tx.Finish | FastRetry] = []
        self._pending_cv = threading.Condition()
        self._wf_cache: dict[tuple[int, int | None], workflow_repo.VersionedWorkflow] = {}
        self._lock = threading.Lock()
        self._unsubscribe = wakeup.subscribe(self._woken)
        self._sqlite_wake = wakeup.SqliteWakeListener(self.engine, uuid.uuid4().hex[:12],
                                                      lambda: self._woken(segments.NOTE))
        self.jobs_done = 0

    # ================================================================== life cycle
    def start(self) -> Worker:
        private_dir(self.scratch_dir)
        self._register()
        self.children.warm(min(2, self.children.size))
        roles = [("claimer", self._claim_loop), ("writer", self._write_loop), ("lifeline", self._lifeline_loop),
                 ("canceller", self._cancel_loop)]
        if listen_available(self.engine):
            roles.append(("listener", self._listen_loop))
        elif self.engine.dialect.name == "sqlite":
            self._sqlite_wake.start()
        for role, target in roles:
            t = threading.Thread(target=self._guarded(role, target), name=f"mm-{role}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("worker started", extra={"worker": self.worker_id, "pools": self.pools})
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let running jobs finish within the grace period, hand back the rest."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + grace
        while (self.running or self._owned_segments) and time.monotonic() < deadline:
            time.sleep(0.05)
        for runner in list(self.running.values()):
            runner.hand_back()
        for stopping in list(self._segment_cancels.values()):
            stopping.set()  # hand segments back too: they keep their place and their attempt
        self.executor.shutdown(wait=True, cancel_futures=False)
        with self._pending_cv:
            self._pending_cv.notify_all()
        for t in self._threads:
            t.join(timeout=10)
        self._flush_pending()
        self._unsubscribe()
        self._sqlite_wake.stop()
        self.children.close()
        with contextlib.suppress(DBAPIError), self.engine.begin() as conn:
            conn.execute(workers_t.update().where(workers_t.c.id == self.worker_id)
                         .values(status="stopped", heartbeat_at=utcnow(), jobs_done=self.jobs_done))

    def run_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then drain gracefully."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        while not stop.wait(0.5):
            pass
        self.stop()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness for probes: every loop thread is alive and the worker is not stopping."""
        dead = [t.name for t in self._threads if not t.is_alive()]
        ok = not dead and not self._stop.is_set()
        return ok, {"worker": self.worker_id, "running_jobs": len(self.running), "dead_threads": dead}

    def _guarded(self, role: str, target: Any) -> Any:
        def run() -> None:
            backoff = 0.1
            while not self._stop.is_set():
                try:
                    target()
                    return
                except DBAPIError as exc:  # the database went away: wait and carry on
                    log.warning("%s: database error, retrying: %s", role, str(exc).split("\n")[0])
                except Exception:
                    log.exception("%s crashed; restarting", role)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)

        return run

    def _register(self) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(workers_t.insert().values(
                id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(), pools=self.pools,
                status="running", started_at=now, heartbeat_at=now, jobs_done=0, version=__version__))
        telemetry.emit("worker.started", worker=self.worker_id, pools=self.pools)

    def _woken(self, note: str) -> None:
        if note == segments.NOTE:
            self._segments_next.clear()
        self._wake.set()

    # ================================================================== claiming
    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            claimed_any = False
            for pool, cap in self.pools.items():
                if self._stop.is_set():
                    return
                claimed_any |= self._claim_pool(pool, cap)
            if not claimed_any:
                self._wake.wait(self._idle_wait())

    def _idle_wait(self) -> float:
        """How long an idle claimer waits for a wake-up. Polling every ``poll_interval`` without LISTEN; with
        it, NOTIFY brings new work, so only until the earliest delayed job or segment is due (its timer may be
        in a worker that died), or a lease at most as a safety net."""
        if not self._listening.is_set():
            return self.settings.poll_interval
        safety = max(self.settings.poll_interval, float(self.settings.lease_seconds))
        due, self._next_due = self._next_due, float("inf")
        return max(0.05, min(safety, due - time.monotonic()))

    def _claim_pool(self, pool: str, cap: int) -> bool:
        free = cap - self.inflight[pool]
        if free <= 0:
            return False  # (paused queues are excluded by the claim itself, at once)
        with self._pending_cv:
            if len(self._pending) > 4 * self.settings.claim_batch:
                return False  # the writer is behind; don't claim more than it can record
        fast: list[tx.Claimed] = []
        slow: list[tx.Claimed] = []
        with self.engine.begin() as conn:
            # segments first: they finish work that jobs already started (same transaction: no extra commit)
            pieces = self._claim_segments(conn, pool, free)
            free -= len(pieces)
            batch = tx.claim(conn, worker_id=self.worker_id, queue=None if pool == ANY else pool,
                             limit=self._claim_limit(pool, free), lease_seconds=self.settings.lease_seconds,
                             mark=False) if free > 0 else []
            for c in batch:
                (fast if self._takes_fast_path(c.job, c.attempts, conn) else slow).append(c)
            started, extra = slow[:free], slow[free:]
            # beyond the free slots: back in the same transaction, so no one ever sees them held; they keep their
            # place. Jobs that finish in memory are written once, at the end; the others are marked running by
            # their runner's first write (one transaction less per job).
            tx.release(conn, worker_id=self.worker_id, queue_ids=[c.queue_id for c in extra])
            self._claimed(conn, pool, bool(batch or pieces), started)
        self._start_segments(pool, pieces)
        if not batch:
            return bool(pieces)
        for c in started:
            c.deferred = False
        for queue in {c.job["queue_name"] for c in extra}:  # other workers may be idle: tell them
            self._wake_due(queue)
        kept = started + fast
        with self._lock:
            self._owned.update({c.job["id"]: c.attempts for c in kept})
        handed: set[int] = set()
        try:
            all_fast = not slow
            for claimed in kept:  # the slots start first; in-process jobs then run here
                all_fast &= self._dispatch(pool, claimed)
                handed.add(claimed.job["id"])
        except BaseException:
            with self._lock:  # jobs claimed but not handed on: let their leases lapse so they are rescued
                for c in kept:
                    if c.job["id"] not in handed:
                        self._disown(c.job)
            raise
        self.fast_hint[pool] = all_fast
        return True

    def _claimed(self, conn: Any, pool: str, found: bool, started: list[tx.Claimed]) -> None:
        """The end of a claim's transaction: the breakers' states read for the runners about to start (their
        gates then read none of their own), or, when nothing was found, when to look again."""
        if started:
            self.breakers.warm(conn)
        elif not found and self._listening.is_set():
            self._note_next_due(pool, conn)

    def _note_next_due(self, pool: str, conn: Any) -> None:
        """An idle claim with LISTEN: note when the pool's earliest delayed job or segment is due, to claim then
        (its retry timer may be in a worker that died)."""
        queue = None if pool == ANY else pool
        now = time.monotonic()
        for due, segment in ((tx.next_due(conn, queue), False), (segments.next_due(conn, queue), True)):
            if due is None:
                continue
            at = now + (due - utcnow()).total_seconds() + 0.01
            self._next_due = min(self._next_due, at)
            if segment and pool in self._segments_next:  # look for them then, even before SEGMENT_POLL_SECONDS
                self._segments_next[pool] = min(self._segments_next[pool], at)

    def _claim_segments(self, conn: Any, pool: str, free: int) -> list[dict[str, Any]]:
        """Segments of chunked encodes for free slots of ``pool``. A worker that found none looks again only
        after SEGMENT_POLL_SECONDS, or at once when told of new ones (``segments_due``): the claim loop of a
        fleet without chunked work spends no statement on them."""
        now = time.monotonic()
        if now < self._segments_next.get(pool, 0.0):
            return []
        rows = segments.claim(conn, worker_id=self.worker_id, queue=None if pool == ANY else pool, limit=free,
                              lease_seconds=self.settings.lease_seconds)
        if not rows:
            self._segments_next[pool] = now + SEGMENT_POLL_SECONDS
        return rows

    def segments_due(self) -> None:
        """Segments were queued (here or, by NOTIFY, elsewhere): look for them on the next claim."""
        self._segments_next.clear()
        self._wake.set()

    def _start_segments(self, pool: str, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            with self._lock:
                self.inflight[pool] += 1
                self._owned_segments.add(row["id"])
            self.executor.submit(self._run_segment, pool, row)

    def _run_segment(self, pool: str, row: dict[str, Any]) -> None:
        self._segment_cancels[row["id"]] = stopping = threading.Event()
        try:
            segments.run_segment(self, row, stopping)
        except Exception:
            log.exception("segment %s of job %s: runner crashed", row["seq"], row["job_id"])
        finally:
            self._segment_cancels.pop(row["id"], None)
            with self._lock:
                self.inflight[pool] -= 1
                self._owned_segments.discard(row["id"])
            self._wake.set()

    def _claim_limit(self, pool: str, free: int) -> int:
        """Free slots, or (after a batch that ran all in process) about FAST_BATCH_SECONDS of in-process jobs."""
        limit = free
        cost = self.fast_cost.get(pool)
        if self.fast_hint[pool] and cost is not None:
            limit = max(free, int(FAST_BATCH_SECONDS / max(cost, 1e-6)))
        return max(1, min(limit, self.settings.claim_batch))

    def _takes_fast_path(self, job: dict[str, Any], attempts: int, conn: Any = None) -> bool:
        """A fresh job whose steps all run in-process (and whose breakers are closed) finishes in memory."""
        if attempts > 1 or job["retry_count"] or job["rescue_count"] or (job["run_number"] or 1) != 1 \
                or job["cancel_requested"] or job.get("shadow_of"):
            return False
        wf = self.workflow(job["workflow_id"], job["workflow_version"], conn)
        return fast_eligible(wf) and all(self.breakers.is_closed(s.action, conn) for s in wf.definition.steps)

    def _dispatch(self, pool: str, claimed: tx.Claimed) -> bool:
        wf = self.workflow(claimed.job["workflow_id"], claimed.job["workflow_version"])
        if claimed.deferred:
            began = time.perf_counter()
            outcome = run_fast(self, claimed, wf)
            took = time.perf_counter() - began
            prev = self.fast_cost.get(pool)
            self.fast_cost[pool] = took if prev is None else prev + FAST_COST_WEIGHT * (took - prev)
            if outcome is not None:
                with self._pending_cv:
                    self._pending.append(outcome)
                    self._pending_cv.notify()
                return True
            # it needs the normal path after all: its runner marks it processing with its first write
        with self._lock:
            self.inflight[pool] += 1
        self.executor.submit(self._run_job, pool, claimed, wf)
        return False

    def _run_job(self, pool: str, claimed: tx.Claimed, wf: workflow_repo.VersionedWorkflow) -> None:
        runner = JobRunner(self, claimed, wf)
        with self._lock:
            stale = self.running.get(claimed.job["id"])
            self.running[claimed.job["id"]] = runner
        if stale is not None:  # our earlier run of this job lost its claim (rescued) but is still going: stop it
            stale.lose()
        if time.monotonic() - self._cancel_noted < 2.0:  # it may have been meant for this job, claimed meanwhile
            self._cancel_check.set()
        try:
            if claimed.job["cancel_requested"]:
                runner.cancel.set()
            runner.run()
        except Exception:
            log.exception("job %s: runner crashed", claimed.job["id"])
            runner.recover()
        finally:
            with self._lock:
                if self.running.get(claimed.job["id"]) is runner:  # not the run that re-claimed it since
                    del self.running[claimed.job["id"]]
                self.inflight[pool] -= 1
                self._disown(claimed.job)
            self._wake.set()

    def _disown(self, job: dict[str, Any]) -> None:
        """Forget a claim (under ``_lock``), unless the job was claimed again since: that claim stays in hand."""
        if self._owned.get(job["id"]) == job[tx.CLAIM_ATTEMPT]:
            del self._owned[job["id"]]

    def workflow(self, workflow_id: int, version: int | None,
                 conn: Any = None) -> workflow_repo.VersionedWorkflow:
        """A workflow version (cached), read on ``conn`` when given (inside the claim's transaction: SQLite
        allows one writer, so a second connection would wait for this one)."""
        key = (workflow_id, version)
        got = self._wf_cache.get(key)
        if got is not None:
            return got
        if conn is not None:
            got = workflow_repo.get_workflow(conn, workflow_id, version)
        else:
            with self.engine.connect() as own:
                got = workflow_repo.get_workflow(own, workflow_id, version)
        if version is not None:  # versions are immutable, so the cache never goes stale
            self._wf_cache[key] = got
        return got

    def wake_later(self, queue: str | None, delay: float) -> None:
        """Wake claimers (here and, on PostgreSQL, everywhere) when a delayed job becomes due."""
        timer = threading.Timer(max(0.0, delay) + 0.01, self._wake_due, args=(queue,))
        timer.daemon = True
        timer.start()

    def _wake_due(self, queue: str | None) -> None:
        self._wake.set()
        if queue and self.engine.dialect.name == "postgresql":
            with contextlib.suppress(DBAPIError), self.engine.begin() as conn:
                wakeup.notify_in_tx(conn, [queue])
        elif queue:
            wakeup.broadcast_sqlite(self.engine)

    def job_finished(self, job: dict[str, Any], status: str, workflow_code: str,
                     error_class: str | None = None) -> None:
        """Count a job whose terminal state was committed (every failed job was also dead-lettered)."""
        self.jobs_done += 1
        if job.get("shadow_of"):
            return  # shadow runs stay out of the figures
        started = job.get("started_at")
        telemetry.emit("job.finished", workflow=workflow_code, status=status, job_id=job["id"],
                       duration_s=(utcnow() - started).total_seconds() if started else None)
        if status == "failed":
            telemetry.emit("job.dead_lettered", workflow=workflow_code, error_class=error_class, job_id=job["id"])

    # ================================================================== batched writer
    def _write_loop(self) -> None:
        while True:
            with self._pending_cv:
                while not self._pending and not self._stop.is_set():
                    self._pending_cv.wait(0.5)
                if not self._pending and self._stop.is_set():
                    return
            self._flush_pending()

    def _flush_pending(self) -> None:
        with self._pending_cv:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
        if not batch:
            return
        finishes = [o for o in batch if isinstance(o, tx.Finish)]
        retries = [o for o in batch if isinstance(o, FastRetry)]
        try:
            with self.engine.begin() as conn:
                accepted = tx.finish_jobs(conn, self.worker_id, finishes)
                requeued = [r for r in retries if self._write_retry(conn, r)]
        except DBAPIError:
            with self._pending_cv:  # keep them; the next flush retries
                self._pending[:0] = batch
            raise
        with self._lock:
            for o in batch:
                self._disown(o.job)
        self._wake.set()  # the claimer may be holding back until the writer caught up
        ok = set(accepted)
        for f in finishes:
            if f.job["id"] in ok:
                self.job_finished(f.job, f.status, f.workflow_code, f.error_class)
            else:
                log.warning("job %s: this worker lost its claim (rescued or finished elsewhere); dropping the job",
                            f.job["job_code"])
        for r in requeued:
            self.wake_later(r.queue, r.delay)
        written = [(f.workflow_code, s) for f in finishes if f.job["id"] in ok for s in f.steps]
        written += [(r.workflow_code, s) for r in requeued for s in r.steps]
        for workflow_code, s in written:
            telemetry.emit("step.finished", action=s.action, status=s.status, error_class=s.error_class,
                           duration_s=(s.completed_at - s.started_at).total_seconds() if s.completed_at else 0.0,
                           workflow=workflow_code)
            if s.status == "failed" and s.error_class:  # counted once the execution is recorded
                self.breakers.record_failure(s.action, s.error_class, False, s.error_message or "")

    def _write_retry(self, conn: Any, r: FastRetry) -> bool:
        ok = tx.requeue(conn, job=r.job, worker_id=self.worker_id, delay=r.delay, reason="retry", count_retry=True,
                        event=retry_event(r.retry))
        if ok:
            conn.execute(tx.se.insert(), [tx._step_row(r.job, s, self.worker_id) for s in r.steps])
        return ok

    # ================================================================== lifeline
    def _lifeline_loop(self) -> None:
        hb = self.settings.effective_heartbeat_seconds
        tick = min(LIFELINE_TICK, hb / 2)
        age_every = min(max(0.2, self.settings.aging_seconds / 4), 15.0)
        next_beat = last_prune = 0.0
        rescue_at = float("inf")
        last_age = last_workers = float("-inf")
        while True:
            now = time.monotonic()
            age = now - last_age >= age_every
            if now >= next_beat or now >= rescue_at or age or self._progress_due(now):
                mark = now - last_workers >= self.settings.lease_seconds
                rescue_at = self._beat(now, hb, age=age, mark_workers=mark)
                next_beat = now + hb
                last_age = now if age else last_age
                last_workers = now if mark else last_workers
            if self.settings.retention_days and now - last_prune >= 600:
                housekeeping.prune_finished_jobs(self.engine, self.storage, days=self.settings.retention_days)
                last_prune = now
            if self._stop.wait(tick):
                return

    def _progress_due(self, now: float) -> bool:
        every = self.settings.progress_seconds
        return any(r.progress_due(now, every) for r in list(self.running.values()))

    def _beat(self, now: float, hb: float, *, age: bool, mark_workers: bool) -> float:
        """One transaction: heartbeat, progress, missed cancellations, a look at the leases, guards, ageing, dead
        workers. Rescues and guard checks follow in transactions of their own, only when there is something to
        do. Returns when to come back for a lease that runs out before the next beat (monotonic; inf: none)."""
        with self._lock:
            owned = dict(self._owned)
            owned_segments = list(self._owned_segments)
            runners = list(self.running.values())
        # a run holds its job while the claim in hand is its own attempt (a stale run was stopped already)
        mine = [r for r in runners if owned.get(r.job["id"]) == r.job[tx.CLAIM_ATTEMPT]]
        written: list[Any] = []
        with self.engine.begin() as conn:
            ours, cancelled = tx.heartbeat(conn, worker_id=self.worker_id, lease_seconds=self.settings.lease_seconds,
                                           claims=owned, status="stopping" if self._stop.is_set() else "running",
                                           jobs_done=self.jobs_done)
            segments.extend_leases(conn, worker_id=self.worker_id, lease_seconds=self.settings.lease_seconds,
                                   ids=owned_segments)
            batch = []
            half = self.settings.progress_seconds / 2
            for runner in mine:
                got = runner.take_progress(now, half) if runner.job["id"] in ours else None
                if got is not None:
                    batch.append(got[0])
                    written.append(got[1])
            tx.write_progress(conn, batch)  # fenced: the claims were just confirmed and stay locked
            lapses = housekeeping.lapsed_leases(conn, horizon_seconds=hb)
            guarded = rollouts.guarded_canaries(conn)
            if mark_workers:
                housekeeping.mark_and_prune_workers_on(conn, lease_seconds=self.settings.lease_seconds,
                                                       retention_hours=self.settings.worker_retention_hours)
            if age:
                housekeeping.age_waiting_on(conn, aging_seconds=self.settings.aging_seconds,
                                            cap=self.settings.aging_max_priority)
        for done in written:
            done()
        for runner in mine:
            job_id = runner.job["id"]
            if job_id in cancelled:
                runner.cancel.set()
            elif job_id not in ours and not runner.releasing and self.running.get(job_id) is runner:
                runner.lose()  # rescued or finished elsewhere
        return self._after_beat(now, lapses, guarded)

    def _after_beat(self, now: float, lapses: housekeeping.Lapses, guarded: list[tuple[int, str]]) -> float:
        """Rescues and guard checks the beat found due, each in transactions of their own; when to beat again
        for a lease about to run out (monotonic; inf: none before the next beat)."""
        if lapses.jobs:  # job by job (see rescue_orphaned_jobs), within half a lease
            housekeeping.rescue_orphaned_jobs(self.engine, max_rescues=self.settings.max_rescues,
                                              on_finish=self.job_finished,
                                              budget_seconds=self.settings.lease_seconds / 2)
        if lapses.segments and segments.rescue_orphaned_segments(self.engine):
            segments.announce(self, 0)
        if guarded:
            rollouts.check_all_guards(self.engine, guarded)
        if lapses.jobs or lapses.segments:
            return now + 1.0  # a backlog may remain (a pass stops after half a lease, locked rows are skipped)
        if lapses.upcoming is None:
            return float("inf")
        return now + max(0.0, (lapses.upcoming - utcnow()).total_seconds()) + 0.05

    def _cancel_loop(self) -> None:
        poll = CANCEL_POLL_SECONDS if self.engine.dialect.name == "sqlite" else CANCEL_POLL_SECONDS_PG
        while not self._stop.is_set():
            if self._listening.is_set():  # NOTIFY says when; the heartbeat catches what it missed
                if not self._cancel_check.wait(1.0):
                    continue
            else:
                self._cancel_check.wait(poll)
            self._cancel_check.clear()
            ids = list(self.running)
            if not ids:
                continue
            with self.engine.connect() as conn:
                hit = conn.execute(sa.select(workflow_jobs.c.id).where(workflow_jobs.c.id.in_(ids),
                                                                       workflow_jobs.c.cancel_requested.is_(True))
                                   ).scalars().all()
            for job_id in hit:
                runner = self.running.get(job_id)
                if runner is not None:
                    runner.cancel.set()

    # ================================================================== PostgreSQL LISTEN
    def _listen_loop(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {wakeup.CHANNEL}")
                    conn.execute(f"LISTEN {wakeup.CANCEL_CHANNEL}")
                    self._listening.set()
                    self._wake.set()  # anything that arrived while we were not listening
                    self._cancel_check.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.channel == wakeup.CANCEL_CHANNEL:
                                self._cancel_noted = time.monotonic()
                                self._cancel_check.set()
                            else:
                                self._woken(note.payload)
            except psycopg.Error as exc:
                self._listening.clear()  # poll for cancellations until LISTEN is back
                log.warning("listener: %s; reconnecting", str(exc).split("\n")[0])
                self._stop.wait(1.0)
