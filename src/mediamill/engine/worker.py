"""The worker: claims jobs from its pools, runs them, keeps its leases alive, rescues others' orphans.

Its background roles are small classes in ``engine/roles.py`` (Claimer, Writer, Lifeline, Canceller, Listener),
each a ``mediamill.loops.Loop`` run in a thread of its own by ``mediamill.loops.LoopRunner``, which owns the one
guard (a database error: a warning and a back-off; anything else: the traceback and a back-off) and the stop.

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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mediamill import __version__, telemetry
from mediamill.engine import roles, segments, wakeup
from mediamill.engine.breakers import BreakerConfig, Breakers
from mediamill.engine.children import ChildPool
from mediamill.engine.inline import FastRetry
from mediamill.engine.retry import RetryPolicy
from mediamill.engine.runner import JobRunner
from mediamill.engine.services import RunServices
from mediamill.fsmode import private_dir
from mediamill.loops import Backoff, Loop, LoopRunner
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store import liveness, workflow_repo
from mediamill.store.connections import DATABASE_ERRORS
from mediamill.store.db import Connection, listen_available
from mediamill.store.timeutil import utcnow

log = logging.getLogger("mediamill.worker")
ANY = roles.ANY
#: how long a role waits after a failed round: 0.1 s, doubling to 2 s
ROLE_BACKOFF = Backoff(first=0.1, most=2.0)


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
        # a slot is freed when its job's last step has run, before the job's finish is written: each slot may have
        # a finishing job beside the one that took it over, and each pool its prefetched jobs waiting for a slot
        self.executor = ThreadPoolExecutor(max_workers=2 * slots + self.settings.prefetch * len(self.pools) + 2,
                                           thread_name_prefix="mm-job")
        self.slots = {pool: roles.Slots(cap) for pool, cap in self.pools.items()}
        self.inflight: dict[str, int] = defaultdict(int)
        self.running: dict[int, JobRunner] = {}
        self._owned: dict[int, int] = {}  # claims still in hand (job id -> attempt): only their leases are extended
        self._owned_segments: set[int] = set()  # claimed segments of chunked encodes still in hand
        self._segment_cancels: dict[int, threading.Event] = {}  # running segment -> set to hand it back
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._listening = threading.Event()  # LISTEN is up: cancellations arrive by NOTIFY
        self._threads: list[threading.Thread] = []
        self._wf_cache: dict[tuple[int, int | None], workflow_repo.VersionedWorkflow] = {}
        self._lock = threading.Lock()
        # the background roles (engine/roles.py); started by start()
        self.claimer = roles.Claimer(self)
        self.writer = roles.Writer(self)
        self.lifeline = roles.Lifeline(self)
        self.canceller = roles.Canceller(self)
        self.listener = roles.Listener(self)
        self._unsubscribe = wakeup.subscribe(self._woken)
        self._sqlite_wake = wakeup.SqliteWakeListener(self.engine, uuid.uuid4().hex[:12],
                                                      lambda: self._woken(segments.NOTE))
        self.jobs_done = 0
        # all that a job's run, a delivery or a segment uses of this worker
        self.services = RunServices(
            runtime=runtime, settings=self.settings, engine=self.engine, storage=self.storage, children=self.children,
            breakers=self.breakers, retry_policy=self.retry_policy, worker_id=self.worker_id,
            scratch_dir=self.scratch_dir, wake_later=self.wake_later, job_finished=self.job_finished)

    # the writer's queue, under the names it always had
    @property
    def _pending(self) -> list[tx.Finish | FastRetry]:
        return self.writer.pending

    @property
    def _pending_cv(self) -> threading.Condition:
        return self.writer.cv

    # the claimer's adaptive batch sizing, read by benchmarks and operators
    @property
    def fast_hint(self) -> dict[str, bool]:
        return self.claimer.fast_hint

    @property
    def fast_cost(self) -> dict[str, float]:
        return self.claimer.fast_cost

    # ================================================================== life cycle
    def start(self) -> Worker:
        private_dir(self.scratch_dir)
        self._register()
        self.children.warm(min(2, self.children.size))
        loops: list[Loop] = [self.claimer, self.writer, self.lifeline, self.canceller]
        if listen_available(self.engine):
            loops.append(self.listener)
        elif self.engine.dialect.name == "sqlite":
            self._sqlite_wake.start()
        for loop in loops:
            runner = LoopRunner(loop, self._stop, thread_name=f"mm-{loop.name}", backoff=ROLE_BACKOFF, logger=log)
            runner.start()
            self._threads.append(runner.thread)
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
        self.writer.release()
        for t in self._threads:
            t.join(timeout=10)
        self.claimer.end_session()  # (its loop gives it back as it ends; not if it ended some other way)
        self._flush_pending()
        self._unsubscribe()
        self._sqlite_wake.stop()
        self.children.close()
        with contextlib.suppress(*DATABASE_ERRORS), self.engine.begin() as conn:
            liveness.mark_stopped(conn, self.worker_id, jobs_done=self.jobs_done, now=utcnow())

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

    def _register(self) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            liveness.register_worker(conn, worker_id=self.worker_id, hostname=socket.gethostname(), pid=os.getpid(),
                                     pools=self.pools, version=__version__, now=now)
        telemetry.emit("worker.started", worker=self.worker_id, pools=self.pools)

    def _woken(self, note: str) -> None:
        if note == segments.NOTE:
            self.claimer.look_for_segments()
        self._wake.set()

    def segments_due(self) -> None:
        """Segments were queued (here or, by NOTIFY, elsewhere): look for them on the next claim."""
        self.claimer.look_for_segments()
        self._wake.set()

    # the roles' steps that tests and tools drive directly
    def _beat(self, now: float, hb: float, *, age: bool, mark_workers: bool) -> float:
        return self.lifeline.beat(now, hb, age=age, mark_workers=mark_workers)

    def _flush_pending(self) -> None:
        self.writer.flush()

    # ================================================================== running what was claimed
    def _start_segments(self, pool: str, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            with self._lock:
                self.inflight[pool] += 1
                self._owned_segments.add(row["id"])
            self.slots[pool].enter(row)
            self.executor.submit(self._run_segment, pool, row)

    def _run_segment(self, pool: str, row: dict[str, Any]) -> None:
        self._segment_cancels[row["id"]] = stopping = threading.Event()
        # segments are claimed only for free slots, so the turn comes at once; a stopping worker hands it back
        # (run_segment sees ``stopping``) without taking one
        held = self.slots[pool].take(row, lambda: stopping.is_set() or self._stop.is_set())
        try:
            segments.run_segment(self.services, row, stopping)
        except Exception:
            log.exception("segment %s of job %s: runner crashed", row["seq"], row["job_id"])
        finally:
            if held:
                self.slots[pool].release()
            self._segment_cancels.pop(row["id"], None)
            with self._lock:
                self.inflight[pool] -= 1
                self._owned_segments.discard(row["id"])
            self.claimer.slot_freed(pool)
            self._wake.set()

    def _run_job(self, pool: str, claimed: tx.Claimed, wf: workflow_repo.VersionedWorkflow) -> None:
        hold = _SlotHold(self, pool, claimed)
        runner = JobRunner(self.services, claimed, wf, slot_done=lambda: hold.free(completed=True))
        with self._lock:
            stale = self.running.get(claimed.job["id"])
            self.running[claimed.job["id"]] = runner
        if stale is not None:  # our earlier run of this job lost its claim (rescued) but is still going: stop it
            stale.lose()
        if time.monotonic() - self.canceller.noted < 2.0:  # it may have been meant for this job, claimed meanwhile
            self.canceller.check.set()
        try:
            if claimed.job["cancel_requested"]:
                runner.cancel.set()
            if hold.take(runner):
                runner.begin_now()
                runner.run()
            elif runner.handing_back or self._stop.is_set():
                self._give_back(claimed)  # a prefetched job that never started: back in its place
            elif not runner.lost:
                runner.run()  # cancelled while it waited: recorded as cancelled (no step runs)
        except Exception:
            log.exception("job %s: runner crashed", claimed.job["id"])
            runner.recover()
        finally:
            with self._lock:
                if self.running.get(claimed.job["id"]) is runner:  # not the run that re-claimed it since
                    del self.running[claimed.job["id"]]
                self._disown(claimed.job)
            hold.free()

    def _give_back(self, claimed: tx.Claimed) -> None:
        """Return a claim that never started to the queue, keeping its place and its attempt; if the database
        does not answer, its lease lapses and it is rescued."""
        try:
            with self.engine.begin() as conn:
                tx.release(conn, worker_id=self.worker_id, queue_ids=[claimed.queue_id])
        except DATABASE_ERRORS:
            log.warning("job %s: could not give back an unstarted claim; its lease will lapse", claimed.job["id"])
            return
        self._wake_due(claimed.job["queue_name"])

    def _disown(self, job: dict[str, Any]) -> None:
        """Forget a claim (under ``_lock``), unless the job was claimed again since: that claim stays in hand."""
        if self._owned.get(job["id"]) == job[tx.CLAIM_ATTEMPT]:
            del self._owned[job["id"]]

    def workflow(self, workflow_id: int, version: int | None,
                 conn: Connection | None = None) -> workflow_repo.VersionedWorkflow:
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
            with contextlib.suppress(*DATABASE_ERRORS), self.engine.begin() as conn:
                wakeup.notify_in_tx(conn, [queue])
        elif queue:
            wakeup.broadcast_sqlite(self.engine)

    def job_finished(self, job: dict[str, Any], status: str, workflow_code: str,
                     error_class: str | None = None) -> None:
        """Count a job whose terminal state was committed (every failed job was also dead-lettered)."""
        self.jobs_finished([(job, status, workflow_code, error_class)])

    def jobs_finished(self, done: Sequence[tuple[dict[str, Any], str, str, str | None]]) -> None:
        """:meth:`job_finished` for many jobs (a batch the writer recorded): one telemetry batch."""
        self.jobs_done += len(done)
        now = utcnow()
        rows = [{"workflow": code, "status": status, "job_id": job["id"],
                 "duration_s": (now - job["started_at"]).total_seconds() if job.get("started_at") else None}
                for job, status, code, _klass in done if not job.get("shadow_of")]  # shadow runs: no figures
        telemetry.emit_many("job.finished", rows)
        for job, status, code, klass in done:
            if status == "failed" and not job.get("shadow_of"):
                telemetry.emit("job.dead_lettered", workflow=code, error_class=klass, job_id=job["id"])


class _SlotHold:
    """One claimed job's place in its pool: counted in ``inflight`` from the claim, holding one of the pool's slots
    from ``take`` to ``free`` (its last step's end, or the end of its run), which the claimer may then fill."""

    def __init__(self, w: Worker, pool: str, claimed: tx.Claimed) -> None:
        self.w, self.pool, self.claimed = w, pool, claimed
        self.slot = w.slots[pool]
        self.held = False
        self.freed = False
        self.began = time.monotonic()

    def take(self, runner: JobRunner) -> bool:
        """Wait for the job's turn at one of the pool's slots (a prefetched job waits for a running one to end);
        False when the job is cancelled, lost or handed back meanwhile, or the worker stops: it must not start."""
        w = self.w
        if self.slot.take(self.claimed, lambda: runner.cancel.is_set() or w._stop.is_set()):
            if not w._stop.is_set():
                self.held, self.began = True, time.monotonic()
                return True
            self.slot.release()
        return False

    def free(self, completed: bool = False) -> None:
        """The job no longer needs its slot. Only a run that completed its steps says how long the workflow's
        jobs take (a quick failure or hold does not make a long workflow short)."""
        w = self.w
        with w._lock:
            if self.freed:
                return
            self.freed = True
            w.inflight[self.pool] -= 1
        w.claimer.slot_freed(self.pool)
        if self.held:
            self.slot.release()
            if completed:
                w.claimer.held_slot(self.pool, self.claimed.job, time.monotonic() - self.began)
        w._wake.set()
