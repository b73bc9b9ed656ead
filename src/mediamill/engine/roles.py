"""The worker's background roles, each a :class:`mediamill.loops.Loop` the :class:`~mediamill.engine.worker.Worker`
composes and runs through :class:`mediamill.loops.LoopRunner` (one thread each, one guard, one back-off).

- :class:`Claimer`   claims batches in priority order when slots are free; waits on NOTIFY / in-process wake-ups
- :class:`Writer`    writes fast-path outcomes of many jobs in one transaction (batched acks)
- :class:`Lifeline`  one transaction per beat: the heartbeat (every lease extended and the ``workers`` row stamped
                     in one statement), the progress of every running job, cancellations missed, a look at the
                     leases (rescues run only when one ran out, at the next expiry), rollout guards, ageing
                     waiting jobs, marking dead workers; prunes old jobs
- :class:`Canceller` looks up cancellations when a NOTIFY says so (polls without LISTEN)
- :class:`Listener`  (PostgreSQL reached directly) LISTEN for new work and cancellations

The roles share the worker's state (its claims in hand, running jobs, wake-up and stop events, lock); what only
one role uses lives on that role.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mediamill import telemetry
from mediamill.engine import housekeeping, rollouts, segments, wakeup
from mediamill.engine.inline import FastRetry, fast_eligible, run_fast
from mediamill.engine.outcomes import retry_event
from mediamill.store import job_rows
from mediamill.store import lifecycle as tx
from mediamill.store.connections import DATABASE_ERRORS
from mediamill.store.db import PING_AFTER_IDLE_SECONDS, Connection, answers
from mediamill.store.timeutil import utcnow

if TYPE_CHECKING:
    from mediamill.engine.worker import Worker

log = logging.getLogger("mediamill.worker")
ANY = "*"
# How much work a worker takes at once. In-process (fast path) jobs run one after another in the claimer thread,
# so one claim takes about FAST_BATCH_SECONDS of them, sized from their measured time (trivial jobs: up to
# `claim_batch`; slower ones: fewer, so the rest stay in the queue for other workers). Jobs that need the normal
# path (child processes) are held for free slots, plus a small prefetch (``prefetch`` jobs a pool, 1 by default) of
# jobs whose workflow version is known to be short (its jobs held a slot under ``prefetch_max_seconds`` on average):
# a held job starts the moment a slot frees instead of a claim's round trip later, and waits about one short job's
# time. Jobs of long or not-yet-seen workflows are never prefetched: a job waiting inside one worker is invisible
# to idle workers.
FAST_BATCH_SECONDS = 0.25
FAST_COST_WEIGHT = 0.2
# A worker that found no segment of a chunked encode looks again after this long, unless told of new ones sooner
# (NOTIFY on PostgreSQL, in-process on SQLite): fleets without chunked work spend about no statement on them.
SEGMENT_POLL_SECONDS = 2.0
# Cancellations reach a PostgreSQL worker by NOTIFY; the poll is then only a safety net (a notification can be
# missed while the listener reconnects, which also triggers a check). Without LISTEN (SQLite, or PgBouncer in
# transaction mode where the listener cannot hold its session) the running jobs are polled.
CANCEL_POLL_SECONDS = 0.2
CANCEL_POLL_SECONDS_PG = 1.0  # PostgreSQL without LISTEN (PgBouncer): a second, not five polls a second
LIFELINE_TICK = 0.25  # how often the lifeline looks whether a beat is due (in memory; no statement)
WRITE_BATCH = 1000  # outcomes the writer records in one transaction at most


def _moving_average(prev: float | None, value: float) -> float:
    """An exponentially weighted average (weight FAST_COST_WEIGHT for the new value; the first value as is)."""
    return value if prev is None else prev + FAST_COST_WEIGHT * (value - prev)


# ================================================================== slots
class Slots:
    """A pool's slots, handed out in claim order: whatever a claim took (jobs, segments of chunked encodes) gets
    its ticket when it is claimed (``enter``) and runs once its ticket is first in line and a slot is free
    (``take``), so a prefetched job never overtakes one claimed before it (claims come in priority order)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._line: deque[object] = deque()
        self._cond = threading.Condition()

    def enter(self, ticket: object) -> None:
        with self._cond:
            self._line.append(ticket)

    def take(self, ticket: object, give_up: Callable[[], bool]) -> bool:
        """Wait for the ticket's turn and a free slot; False (and out of line) once ``give_up()`` says so. A ticket
        that never entered joins the end of the line."""
        with self._cond:
            if not any(t is ticket for t in self._line):
                self._line.append(ticket)
            while not give_up():
                if self._free > 0 and self._line and self._line[0] is ticket:
                    self._line.popleft()
                    self._free -= 1
                    self._cond.notify_all()  # the next in line may find a slot too
                    return True
                self._cond.wait(0.05)
            self._line = deque(t for t in self._line if t is not ticket)
            self._cond.notify_all()
            return False

    def release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()


# ================================================================== claiming
@dataclass
class _Round:
    """What one claim took and what became of it."""

    pieces: list[dict[str, Any]] = field(default_factory=list)  # segments of chunked encodes
    batch: list[tx.Claimed] = field(default_factory=list)  # every job the claim returned
    # held by the claim's transaction and run there (PostgreSQL):
    done: list[tx.Finish] = field(default_factory=list)  # finished there
    retried: list[tuple[tx.Claimed, FastRetry]] = field(default_factory=list)  # to be requeued by the writer
    fallback: list[tx.Claimed] = field(default_factory=list)  # needing the normal path after all
    fast: list[tx.Claimed] = field(default_factory=list)  # in-memory jobs to run after the commit (SQLite)
    slow: list[tx.Claimed] = field(default_factory=list)  # jobs for the slots
    started: list[tx.Claimed] = field(default_factory=list)  # of those, the ones that take a slot (or wait)
    extra: list[tx.Claimed] = field(default_factory=list)  # given back in the same transaction


class Claimer:
    """Claims work for the worker's pools while it has free slots; in-process jobs run here, in its thread."""

    name = "claimer"

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.segments_next: dict[str, float] = {}  # pool -> when to look for segments again (monotonic)
        self.next_due = float("inf")  # when the earliest delayed job or segment of our pools is due (monotonic)
        self.fast_hint: dict[str, bool] = defaultdict(bool)
        self.fast_cost: dict[str, float] = {}  # pool -> moving average of one in-process job's seconds
        # (workflow id, version) -> moving average of the seconds one of its jobs holds a slot
        self.slot_cost: dict[tuple[int, int | None], float] = {}
        self.short_pools: set[str] = set()  # pools that ran a job of a short workflow: their claims prefetch
        # pools whose last claim gave back what it could not hold: no prefetch until one of their slots frees (else
        # the claimer would take and give back the same job in a loop, each time a transaction and a wake-up of
        # every worker, itself included, while the job waits for a free slot)
        self.gave_back: set[str] = set()
        self._session: Connection | None = None
        self._session_used = 0.0  # monotonic
        # held by whichever thread claims: the claimer's own, or the listener's on a NOTIFY that finds it idle
        self.turn = threading.Lock()

    def run_once(self) -> float | None:
        w = self.w
        if w._stop.is_set():
            with self.turn:  # (the listener's thread may be in a round on it)
                self.end_session()
            return None
        with self.turn:
            w._wake.clear()
            claimed_any = self.claim_all()
            if claimed_any is None:
                self.end_session()
                return None
            # (under the turn: a round in the listener's thread notes when delayed work is due, which this reads)
            wait = None if claimed_any else self.idle_wait()
        if wait is not None:
            w._wake.wait(wait)
        return 0

    def claim_all(self) -> bool | None:
        """One claim for each pool with room (the caller holds ``turn``): whether any took something, None when
        the worker is stopping."""
        w = self.w
        claimed_any = False
        for pool, cap in w.pools.items():
            if w._stop.is_set():
                return None
            claimed_any |= self.claim_pool(pool, cap)
        return claimed_any

    def on_notice(self) -> None:
        """(The listener's thread) A NOTIFY said work was queued. An idle claimer's turn is taken here, in the
        thread the notification woke: waking the claimer's thread instead costs an idle host a fifth of a
        millisecond of the pickup (the thread's wake-up and its wait for the interpreter's lock). A busy claimer
        is told, as before; so is an idle one when this round took something (there may be more) or failed (its
        thread retries, with the loop's guard and back-off)."""
        w = self.w
        if w._stop.is_set() or not self.turn.acquire(blocking=False):
            w._wake.set()
            return
        try:
            more = self.claim_all() is not False or self.next_due != float("inf")
        except DATABASE_ERRORS as exc:  # reported as the loops report it; the claimer's thread retries
            log.warning("listener: database error while claiming, the claimer retries: %s", str(exc).split("\n")[0])
            more = True
        except Exception:
            log.exception("listener: claiming on a notification crashed; the claimer retries")
            more = True
        finally:
            self.turn.release()
        if more:
            w._wake.set()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A claim's transaction on the claimer's own connection, kept between rounds: taking one from the pool
        at every wake-up costs an idle worker more than the claim's statement (a fifth of a millisecond of its
        pickup). After ``PING_AFTER_IDLE_SECONDS`` unused it is pinged first, as the pool pings a connection that
        sat that long (the server may have restarted meanwhile), and replaced when it does not answer; a round that
        fails gives it back."""
        now = time.monotonic()
        session = self._session
        if session is not None and (session.invalidated or (
                now - self._session_used > PING_AFTER_IDLE_SECONDS and not answers(session))):
            self.end_session()
        if self._session is None:
            self._session = self.w.engine.connect()
        self._session_used = now
        try:
            with self._session.begin():
                yield self._session
        except BaseException:
            self.end_session()
            raise

    def end_session(self) -> None:
        """Give the claimer's connection back to the pool (at the stop, after a failed round, when idle)."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(*DATABASE_ERRORS):
                session.close()

    def look_for_segments(self) -> None:
        """Segments were queued: look for them on the next claim of every pool."""
        self.segments_next.clear()

    def idle_wait(self) -> float:
        """How long an idle claimer waits for a wake-up. Polling every ``poll_interval`` without LISTEN; with
        it, NOTIFY brings new work, so only until the earliest delayed job or segment is due (its timer may be
        in a worker that died), or a lease at most as a safety net."""
        settings = self.w.settings
        if not self.w._listening.is_set():
            return settings.poll_interval
        safety = max(settings.poll_interval, float(settings.lease_seconds))
        due, self.next_due = self.next_due, float("inf")
        return max(0.05, min(safety, due - time.monotonic()))

    def claim_pool(self, pool: str, cap: int) -> bool:
        w = self.w
        free = cap + self.prefetch(pool) - w.inflight[pool]
        if free <= 0:
            return False  # (paused queues are excluded by the claim itself, at once)
        if w.writer.behind(4 * w.settings.claim_batch):
            return False  # the writer is behind; don't claim more than it can record
        got = self.claim_round(pool, cap, free)
        w._start_segments(pool, got.pieces)
        if not got.batch:
            return bool(got.pieces)
        if got.done:
            w.writer.recorded(got.done)  # (retries are requeued by the writer: their entries are claimed now)
        for c in got.started:
            c.deferred = False
        self.given_back(pool, got.extra)
        self.hand_on(pool, got)
        return True

    def claim_round(self, pool: str, cap: int, free: int) -> _Round:
        """One claim's transaction: segments, then jobs; on PostgreSQL the jobs that finish in memory run inside
        it, their entries only locked, and what they end with is written there too."""
        w = self.w
        got = _Round()
        with self.transaction() as conn:
            # segments first: they finish work that jobs already started (same transaction: no extra commit)
            # (only for slots free now: a segment is not prefetched)
            open_slots = cap - w.inflight[pool]
            got.pieces = self.claim_segments(conn, pool, open_slots) if open_slots > 0 else []
            free -= len(got.pieces)
            got.batch = tx.claim(conn, worker_id=w.worker_id, queue=None if pool == ANY else pool,
                                 limit=self.claim_limit(pool, free), lease_seconds=w.settings.lease_seconds,
                                 mark=False, hold=self.holds(pool, conn)) if free > 0 else []
            held = [c for c in got.batch if c.held]
            if held:
                got.done, got.retried, got.fallback = self.run_held(conn, pool, held)
            for c in got.batch:
                if not c.held:
                    (got.fast if self.takes_fast_path(c.job, c.attempts, conn) else got.slow).append(c)
            # the free slots start at once; beyond them, the prefetch keeps only jobs of workflows known to be short
            room = max(0, open_slots - len(got.pieces))
            got.started = got.slow[:room]
            for c in got.slow[room:]:
                (got.started if len(got.started) < free and self.short(c.job) else got.extra).append(c)
            # the rest: back in the same transaction, so no one ever sees them held; they keep their
            # place. Jobs that finish in memory are written once, at the end; the others are marked running by
            # their runner's first write (one transaction less per job).
            tx.release(conn, worker_id=w.worker_id, queue_ids=[c.queue_id for c in got.extra])
            self.claimed(conn, pool, bool(got.batch or got.pieces), got.started)
        return got

    def hand_on(self, pool: str, got: _Round) -> None:
        """After the claim's commit: the slots start first; in-process jobs then run here."""
        w = self.w
        kept = got.started + got.fast
        later = [*got.fallback, *(c for c, _r in got.retried)]  # held, then claimed for real
        with w._lock:
            w._owned.update({c.job["id"]: c.attempts for c in kept + later})
        for _c, r in got.retried:
            w.writer.add(r)
        handed: set[int] = set()
        try:
            all_fast = not got.slow and not got.fallback
            for c in got.fallback:
                self.start_normally(pool, c, w.workflow(c.job["workflow_id"], c.job["workflow_version"]))
                handed.add(c.job["id"])
            for claimed in kept:
                all_fast &= self.dispatch(pool, claimed)
                handed.add(claimed.job["id"])
        except BaseException:
            with w._lock:  # jobs claimed but not handed on: let their leases lapse so they are rescued
                for c in [*kept, *got.fallback]:
                    if c.job["id"] not in handed:
                        w._disown(c.job)
            raise
        self.fast_hint[pool] = all_fast

    def claimed(self, conn: Connection, pool: str, found: bool, started: list[tx.Claimed]) -> None:
        """The end of a claim's transaction: the breakers' states read for the runners about to start (their
        gates then read none of their own), or, when nothing was found, when to look again."""
        if started:
            self.w.breakers.warm(conn)
        elif not found and self.w._listening.is_set():
            self.note_next_due(pool, conn)

    def note_next_due(self, pool: str, conn: Connection) -> None:
        """An idle claim with LISTEN: note when the pool's earliest delayed job or segment is due, to claim then
        (its retry timer may be in a worker that died)."""
        queue = None if pool == ANY else pool
        now = time.monotonic()
        for due, segment in ((tx.next_due(conn, queue), False), (segments.next_due(conn, queue), True)):
            if due is None:
                continue
            at = now + (due - utcnow()).total_seconds() + 0.01
            self.next_due = min(self.next_due, at)
            if segment and pool in self.segments_next:  # look for them then, even before SEGMENT_POLL_SECONDS
                self.segments_next[pool] = min(self.segments_next[pool], at)

    def claim_segments(self, conn: Connection, pool: str, free: int) -> list[dict[str, Any]]:
        """Segments of chunked encodes for free slots of ``pool``. A worker that found none looks again only
        after SEGMENT_POLL_SECONDS, or at once when told of new ones (``segments_due``): the claim loop of a
        fleet without chunked work spends no statement on them."""
        now = time.monotonic()
        if now < self.segments_next.get(pool, 0.0):
            return []
        rows = segments.claim(conn, worker_id=self.w.worker_id, queue=None if pool == ANY else pool, limit=free,
                              lease_seconds=self.w.settings.lease_seconds)
        if not rows:
            self.segments_next[pool] = now + SEGMENT_POLL_SECONDS
        return rows

    def prefetch(self, pool: str) -> int:
        """Jobs to ask for beyond the pool's free slots: ``prefetch`` once the pool ran a short workflow's job
        (what the claim returns beyond the slots is kept only for short workflows: ``short``)."""
        if pool not in self.short_pools or pool in self.gave_back:
            return 0
        return self.w.settings.prefetch

    def given_back(self, pool: str, extra: list[tx.Claimed]) -> None:
        """A claim gave ``extra`` back: other workers may be idle (tell them), and this pool prefetches no more
        until one of its slots frees."""
        if not extra:
            return
        self.gave_back.add(pool)
        for queue in {c.job["queue_name"] for c in extra}:
            self.w._wake_due(queue)

    def slot_freed(self, pool: str) -> None:
        """A job or segment of ``pool`` gave its slot back: the pool may prefetch again."""
        self.gave_back.discard(pool)

    def short(self, job: dict[str, Any]) -> bool:
        """Whether the job's workflow version is known to hold a slot less than ``prefetch_max_seconds``: only
        those are held waiting for a slot (an unknown or long one would wait inside a busy worker while another
        worker may be idle)."""
        cost = self.slot_cost.get((job["workflow_id"], job["workflow_version"]))
        return cost is not None and cost < self.w.settings.prefetch_max_seconds

    def held_slot(self, pool: str, job: dict[str, Any], seconds: float) -> None:
        """A job of ``pool`` held its slot ``seconds`` (from the moment it got it to its last step's end)."""
        key = (job["workflow_id"], job["workflow_version"])
        self.slot_cost[key] = cost = _moving_average(self.slot_cost.get(key), seconds)
        if cost < self.w.settings.prefetch_max_seconds:
            self.short_pools.add(pool)

    def claim_limit(self, pool: str, free: int) -> int:
        """Free slots, or (after a batch that ran all in process) about FAST_BATCH_SECONDS of in-process jobs."""
        limit = free
        cost = self.fast_cost.get(pool)
        if self.fast_hint[pool] and cost is not None:
            limit = max(free, int(FAST_BATCH_SECONDS / max(cost, 1e-6)))
        return max(1, min(limit, self.w.settings.claim_batch))

    def takes_fast_path(self, job: dict[str, Any], attempts: int, conn: Connection | None = None) -> bool:
        """A fresh job whose steps all run in-process (and whose breakers are closed) finishes in memory."""
        if attempts > 1 or job["retry_count"] or job["rescue_count"] or (job["run_number"] or 1) != 1 \
                or job["cancel_requested"] or job.get("shadow_of"):
            return False
        wf = self.w.workflow(job["workflow_id"], job["workflow_version"], conn)
        return fast_eligible(wf) and all(self.w.breakers.is_closed(s.action, conn) for s in wf.definition.steps)

    def holds(self, pool: str, conn: Connection) -> Callable[[dict[str, Any], int], bool] | None:
        """Which claimed jobs the claim's transaction only holds (``tx.claim(hold=…)``): the in-memory ones, once
        the pool's last claim was all in memory (a claim that holds costs a statement more for the jobs it
        does not hold)."""
        if not self.fast_hint[pool]:
            return None
        return lambda job, attempt: self.takes_fast_path(job, attempt, conn)

    def run_in_memory(self, pool: str, claimed: tx.Claimed, wf: Any) -> tx.Finish | FastRetry | None:
        """Run a fast-path job here; None: it needs the normal path after all."""
        began = time.perf_counter()
        try:
            return run_fast(self.w.services, claimed, wf)
        finally:
            self.fast_cost[pool] = _moving_average(self.fast_cost.get(pool), time.perf_counter() - began)

    def run_held(self, conn: Connection, pool: str, held: list[tx.Claimed]
                 ) -> tuple[list[tx.Finish], list[tuple[tx.Claimed, FastRetry]], list[tx.Claimed]]:
        """Run the jobs the claim's transaction holds (PostgreSQL) and write what finished in that same
        transaction; the others (a retry, or the normal path after all) are claimed for real there."""
        w = self.w
        finished: list[tuple[tx.Claimed, tx.Finish]] = []
        retries: list[tuple[tx.Claimed, FastRetry]] = []
        normal: list[tx.Claimed] = []
        for c in held:
            try:
                outcome = self.run_in_memory(pool, c, w.workflow(c.job["workflow_id"], c.job["workflow_version"],
                                                                 conn))
            except Exception:  # the normal path runs it again and records what happens, with retries
                log.exception("job %s: the in-memory run failed; it takes the normal path", c.job["job_code"])
                outcome = None
            if isinstance(outcome, tx.Finish):
                finished.append((c, outcome))
            elif outcome is None:
                normal.append(c)
            else:
                retries.append((c, outcome))
        tx.finish_held(conn, w.worker_id, [f for _c, f in finished], [c.queue_id for c, _f in finished])
        tx.claim_held(conn, [*normal, *(c for c, _r in retries)], worker_id=w.worker_id,
                      lease_seconds=w.settings.lease_seconds)
        return [f for _c, f in finished], retries, normal

    def dispatch(self, pool: str, claimed: tx.Claimed) -> bool:
        w = self.w
        wf = w.workflow(claimed.job["workflow_id"], claimed.job["workflow_version"])
        if claimed.deferred:
            outcome = self.run_in_memory(pool, claimed, wf)
            if outcome is not None:
                w.writer.add(outcome)
                return True
            # it needs the normal path after all: its runner marks it processing with its first write
        self.start_normally(pool, claimed, wf)
        return False

    def start_normally(self, pool: str, claimed: tx.Claimed, wf: Any) -> None:
        """Hand a claimed job to a job thread (it waits there for one of the pool's slots)."""
        w = self.w
        with w._lock:
            w.inflight[pool] += 1
        w.slots[pool].enter(claimed)
        w.executor.submit(w._run_job, pool, claimed, wf)


# ================================================================== batched writer
class Writer:
    """Records the outcomes of in-process jobs, many in one transaction (batched acks)."""

    name = "writer"

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.pending: list[tx.Finish | FastRetry] = []
        self.cv = threading.Condition()

    def add(self, outcome: tx.Finish | FastRetry) -> None:
        with self.cv:
            self.pending.append(outcome)
            self.cv.notify()

    def behind(self, limit: int) -> bool:
        """More than ``limit`` outcomes wait to be written."""
        with self.cv:
            return len(self.pending) > limit

    def release(self) -> None:
        """Wake the writer (the worker is stopping: it writes what is left, then ends)."""
        with self.cv:
            self.cv.notify_all()

    def run_once(self) -> float | None:
        stop = self.w._stop
        with self.cv:
            while not self.pending and not stop.is_set():
                self.cv.wait(0.5)
            if not self.pending and stop.is_set():
                return None
        self.flush()
        return 0

    def flush(self) -> None:
        w = self.w
        with self.cv:
            batch, self.pending = self.pending[:WRITE_BATCH], self.pending[WRITE_BATCH:]
        if not batch:
            return
        finishes = [o for o in batch if isinstance(o, tx.Finish)]
        retries = [o for o in batch if isinstance(o, FastRetry)]
        try:
            with w.engine.begin() as conn:
                accepted = tx.finish_jobs(conn, w.worker_id, finishes)
                requeued = [r for r in retries if self.write_retry(conn, r)]
        except DATABASE_ERRORS:
            with self.cv:  # keep them; the next flush retries
                self.pending[:0] = batch
            raise
        with w._lock:
            for o in batch:
                w._disown(o.job)
        w._wake.set()  # the claimer may be holding back until the writer caught up
        ok = set(accepted)
        for f in finishes:
            if f.job["id"] not in ok:
                log.warning("job %s: this worker lost its claim (rescued or finished elsewhere); dropping the job",
                            f.job["job_code"])
        self.recorded([f for f in finishes if f.job["id"] in ok], requeued)

    def recorded(self, finishes: Sequence[tx.Finish], requeued: Sequence[FastRetry] = ()) -> None:
        """After the commit of in-memory outcomes: count them, wake claimers for the retries, feed the breakers."""
        w = self.w
        w.jobs_finished([(f.job, f.status, f.workflow_code, f.error_class) for f in finishes])
        for r in requeued:
            w.wake_later(r.queue, r.delay)
        written = [(f.workflow_code, s) for f in finishes for s in f.steps]
        written += [(r.workflow_code, s) for r in requeued for s in r.steps]
        telemetry.emit_many("step.finished", [
            {"action": s.action, "status": s.status, "error_class": s.error_class, "workflow": workflow_code,
             "duration_s": (s.completed_at - s.started_at).total_seconds() if s.completed_at else 0.0}
            for workflow_code, s in written])
        for _code, s in written:
            if s.status == "failed" and s.error_class:  # counted once the execution is recorded
                w.breakers.record_failure(s.action, s.error_class, False, s.error_message or "")

    def write_retry(self, conn: Connection, r: FastRetry) -> bool:
        ok = tx.requeue(conn, job=r.job, worker_id=self.w.worker_id, delay=r.delay, reason="retry",
                        count_retry=True, event=retry_event(r.retry))
        if ok:
            conn.execute(tx.se.insert(), [tx._step_row(r.job, s, self.w.worker_id) for s in r.steps])
        return ok


# ================================================================== lifeline
class Lifeline:
    """The worker's beat: heartbeat, progress, missed cancellations, leases, guards, ageing, dead workers."""

    name = "lifeline"

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.next_beat = self.last_prune = 0.0
        self.rescue_at = float("inf")
        self.last_age = self.last_workers = float("-inf")

    def run_once(self) -> float | None:
        w = self.w
        settings = w.settings
        hb = settings.effective_heartbeat_seconds
        tick = min(LIFELINE_TICK, hb / 2)
        age_every = min(max(0.2, settings.aging_seconds / 4), 15.0)
        now = time.monotonic()
        age = now - self.last_age >= age_every
        if now >= self.next_beat or now >= self.rescue_at or age or self.progress_due(now):
            mark = now - self.last_workers >= settings.lease_seconds
            self.rescue_at = self.beat(now, hb, age=age, mark_workers=mark)
            self.next_beat = now + hb
            self.last_age = now if age else self.last_age
            self.last_workers = now if mark else self.last_workers
        if settings.retention_days and now - self.last_prune >= 600:
            housekeeping.prune_finished_jobs(w.engine, w.storage, days=settings.retention_days)
            self.last_prune = now
        return tick

    def progress_due(self, now: float) -> bool:
        every = self.w.settings.progress_seconds
        return any(r.progress_due(now, every) for r in list(self.w.running.values()))

    def beat(self, now: float, hb: float, *, age: bool, mark_workers: bool) -> float:
        """One transaction: heartbeat, progress, missed cancellations, a look at the leases, guards, ageing, dead
        workers. Rescues and guard checks follow in transactions of their own, only when there is something to
        do. Returns when to come back for a lease that runs out before the next beat (monotonic; inf: none)."""
        w = self.w
        settings = w.settings
        with w._lock:
            owned = dict(w._owned)
            owned_segments = list(w._owned_segments)
            runners = list(w.running.values())
        # a run holds its job while the claim in hand is its own attempt (a stale run was stopped already)
        mine = [r for r in runners if owned.get(r.job["id"]) == r.job[tx.CLAIM_ATTEMPT]]
        written: list[Any] = []
        with w.engine.begin() as conn:
            ours, cancelled = tx.heartbeat(conn, worker_id=w.worker_id, lease_seconds=settings.lease_seconds,
                                           claims=owned, status="stopping" if w._stop.is_set() else "running",
                                           jobs_done=w.jobs_done)
            segments.extend_leases(conn, worker_id=w.worker_id, lease_seconds=settings.lease_seconds,
                                   ids=owned_segments)
            batch = []
            half = settings.progress_seconds / 2
            for runner in mine:
                got = runner.take_progress(now, half) if runner.job["id"] in ours else None
                if got is not None:
                    batch.append(got[0])
                    written.append(got[1])
            tx.write_progress(conn, batch)  # fenced: the claims were just confirmed and stay locked
            lapses = housekeeping.lapsed_leases(conn, horizon_seconds=hb)
            guarded = rollouts.guarded_canaries(conn)
            if mark_workers:
                housekeeping.mark_and_prune_workers_on(conn, lease_seconds=settings.lease_seconds,
                                                       retention_hours=settings.worker_retention_hours)
            if age:
                housekeeping.age_waiting_on(conn, aging_seconds=settings.aging_seconds,
                                            cap=settings.aging_max_priority)
        for done in written:
            done()
        for runner in mine:
            job_id = runner.job["id"]
            if job_id in cancelled:
                runner.cancel.set()
            elif job_id not in ours and not runner.releasing and w.running.get(job_id) is runner:
                runner.lose()  # rescued or finished elsewhere
        return self.after_beat(now, lapses, guarded)

    def after_beat(self, now: float, lapses: housekeeping.Lapses, guarded: list[tuple[int, str]]) -> float:
        """Rescues and guard checks the beat found due, each in transactions of their own; when to beat again
        for a lease about to run out (monotonic; inf: none before the next beat)."""
        w = self.w
        settings = w.settings
        if lapses.jobs:  # job by job (see rescue_orphaned_jobs), within half a lease
            housekeeping.rescue_orphaned_jobs(w.engine, max_rescues=settings.max_rescues,
                                              on_finish=w.job_finished,
                                              budget_seconds=settings.lease_seconds / 2)
        if lapses.segments and segments.rescue_orphaned_segments(w.engine):
            segments.announce(w.services, 0)
        if guarded:
            rollouts.check_all_guards(w.engine, guarded)
        if lapses.jobs or lapses.segments:
            return now + 1.0  # a backlog may remain (a pass stops after half a lease, locked rows are skipped)
        if lapses.upcoming is None:
            return float("inf")
        return now + max(0.0, (lapses.upcoming - utcnow()).total_seconds()) + 0.05


# ================================================================== cancellations
class Canceller:
    """Stops running jobs whose cancellation was asked for: when a NOTIFY says so, or by polling without LISTEN."""

    name = "canceller"

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.check = threading.Event()  # look now
        self.noted = 0.0  # when the last cancel notification arrived (monotonic)
        self.poll = CANCEL_POLL_SECONDS if w.engine.dialect.name == "sqlite" else CANCEL_POLL_SECONDS_PG

    def note(self) -> None:
        """A cancel notification arrived: look at once."""
        self.noted = time.monotonic()
        self.check.set()

    def run_once(self) -> float | None:
        w = self.w
        if w._stop.is_set():
            return None
        if w._listening.is_set():  # NOTIFY says when; the heartbeat catches what it missed
            if not self.check.wait(1.0):
                return 0
        else:
            self.check.wait(self.poll)
        self.check.clear()
        ids = list(w.running)
        if not ids:
            return 0
        with w.engine.connect() as conn:
            hit = job_rows.cancel_requested(conn, ids)
        for job_id in hit:
            runner = w.running.get(job_id)
            if runner is not None:
                runner.cancel.set()
        return 0


# ================================================================== PostgreSQL LISTEN
class Listener:
    """(PostgreSQL reached directly) LISTEN for new work and cancellations, on a session of its own."""

    name = "listener"

    def __init__(self, w: Worker) -> None:
        self.w = w

    def serves(self, queue: str) -> bool:
        """Whether new work in ``queue`` is this worker's (a pool of it, or a pool of every queue)."""
        pools = self.w.pools
        return queue in pools or ANY in pools

    def run_once(self) -> float | None:
        import psycopg

        w = self.w
        if w._stop.is_set():
            return None
        url = w.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"LISTEN {wakeup.CHANNEL}")
                conn.execute(f"LISTEN {wakeup.CANCEL_CHANNEL}")
                w._listening.set()
                w._wake.set()  # anything that arrived while we were not listening
                w.canceller.check.set()
                while not w._stop.is_set():
                    # what arrived together (stop_after=1 ends with the packet that brought the first one) is one
                    # claim at most: a burst of submits costs an idle worker one round, not one a notification
                    work = False
                    for note in conn.notifies(timeout=1.0, stop_after=1):
                        if note.channel == wakeup.CANCEL_CHANNEL:
                            w.canceller.note()
                        elif note.payload == segments.NOTE:
                            w._woken(note.payload)
                        elif self.serves(note.payload):
                            work = True
                    if work:
                        w.claimer.on_notice()
        except psycopg.Error as exc:
            w._listening.clear()  # poll for cancellations until LISTEN is back
            log.warning("listener: %s; reconnecting", str(exc).split("\n")[0])
            return 1.0
        return None
