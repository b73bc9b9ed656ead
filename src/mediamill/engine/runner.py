"""Running one claimed job: steps in order (or by ``needs:``), ``when:`` decisions, fusion, checkpoints,
on_failure semantics, retries through the queue, breakers, cancel, the workflow deadline.

Each unit of steps returns an outcome value (``engine.outcomes``): ``Continue`` lets the job go on;
``Retry``, ``Hold``, ``FailJob`` or ``Complete`` end this run and are written by ``_apply``, at the
runner's top. What a failure leads to is decided by ``outcomes.after_failure``, the same rule the
in-process fast path (``engine.inline``) applies."""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from structlog.contextvars import bound_contextvars, get_contextvars

from mediamill import telemetry
from mediamill.actions.base import fuses, get_action
from mediamill.engine.breakers import Gate
from mediamill.engine.children import Cancelled
from mediamill.engine.outcomes import (
    Complete,
    Continue,
    FailJob,
    Failure,
    FailurePolicy,
    Hold,
    Outcome,
    Parked,
    Retry,
    after_failure,
    retry_event,
)
from mediamill.engine.services import LostClaim
from mediamill.engine.shadow import SHADOW_SKIP, acts_outside
from mediamill.errors import (
    MESSAGE_MAX,
    SHORT_MESSAGE,
    STDERR_TAIL,
    InvalidInput,
    MediamillError,
    ResourceExceeded,
    UnsupportedFormat,
    classify_exception,
)
from mediamill.media.sniff import accepts
from mediamill.statuses import DONE_STEP, FINISHED_STEP, SUCCEEDED_JOB, JobStatus
from mediamill.storage import new_key
from mediamill.store import jsontext
from mediamill.store import lifecycle as tx
from mediamill.store.connections import CONNECTION_ERRORS, DATABASE_ERRORS
from mediamill.store.timeutil import utcnow
from mediamill.workflows.conditions import ConditionError, JobFacts, condition_variables, evaluate_condition
from mediamill.workflows.models import DELIVER_ACTION

if TYPE_CHECKING:
    from mediamill.engine.segments import ChunkJoin
    from mediamill.engine.services import RunServices
    from mediamill.store.workflow_repo import VersionedWorkflow

# Progress is written by the worker's heartbeat (one transaction for all its jobs): a beat comes when a job's
# progress is `progress_seconds` old (a setting, 5 s by default), and takes the progress of every job written at
# least half that long ago (so the jobs of a worker share their beats), never more often.
PROGRESS_EVENT_STEP = 10.0  # a progress event each time the job's percentage crosses a multiple of this
_INPUT_FIELD = re.compile(r"\binput\s*(?:\.\s*(\w+)|\[\s*['\"](\w+)['\"]\s*\])")
_KNOWN_WITHOUT_PROBE = {"mime", "size", "filename", ""}
log = logging.getLogger("mediamill.engine")


@dataclass
class StepState:
    status: str = "pending"  # pending | running | completed | skipped | failed
    failures_total: int = 0
    failures_run: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # {name, path, mime_type, metadata}


class JobRunner:
    """Runs the steps of one claimed job on a worker (called in a worker thread)."""

    def __init__(self, services: RunServices, claimed: tx.Claimed, wf: VersionedWorkflow,
                 slot_done: Callable[[], None] | None = None) -> None:
        self.svc = services
        # called once the job's last unit has run: the slot is free for the next job while this one's outcome is
        # written (the finish is bookkeeping; it needs no child process)
        self.slot_done = slot_done or (lambda: None)
        self.job = claimed.job
        self.attempts = claimed.attempts
        self.wf = wf
        self.d = wf.definition
        self.steps = self.d.steps
        self.dag = any(s.needs is not None for s in self.steps)  # steps by ``needs:``, units in several threads
        self.states = [StepState() for _ in self.steps]
        self.cancel = threading.Event()
        self.handing_back = False
        self.partial = False
        self.scratch = services.scratch_dir / f"job-{self.job['id']}-{self.attempts}"
        self.input_path: Path | None = None
        self.marked = claimed.marked  # the job row says processing (else the first guarded write marks it)
        self.releasing = False  # a write giving the claim up (finish, requeue, park) is under way
        # writes of the job's that wait for its next transaction (see ``_defer``); only the runner's thread uses it
        self._deferred: list[_Deferred] = []
        # a transaction carried them and did not report its commit (it may have committed): their files stay
        self._carried_unsure = False
        self._last_progress = time.monotonic()  # when progress was last written (or the job started)
        self._progress_pending: dict[int, tuple[float, int]] = {}  # step -> (percent, execution id) not yet written
        self._step_percent: dict[int, float] = {}  # latest percentage of each step that reported
        self._progress_seen: set[int] = set()  # steps whose progress was written at least once
        self._progress_event_mark = -PROGRESS_EVENT_STEP  # job percentage of the last progress event (none yet)
        self.lost = False  # the claim was rescued or finished elsewhere: nothing more is written
        self._lock = threading.Lock()
        self.deadline = (self.job["started_at"] or utcnow()) + timedelta(minutes=self.d.timeout_minutes)

    # ------------------------------------------------------------------ entry
    def begin_now(self) -> None:
        """The job got its slot: a first run's clock starts now (a prefetched claim may have waited for it)."""
        if self._fresh() and not self.marked:
            self.job["started_at"] = utcnow()
            self.deadline = self.job["started_at"] + timedelta(minutes=self.d.timeout_minutes)

    def run(self) -> None:
        with bound_contextvars(job_id=self.job["id"], worker=self.svc.worker_id,
                               request_id=self.job.get("request_id") or None):
            log.info("job started: %s (%s v%s, attempt %s)", self.job["job_code"], self.d.code, self.wf.version,
                     self.attempts)
            self._run()

    def _run(self) -> None:
        try:
            self._settle()
        except CONNECTION_ERRORS as exc:
            # the database went away mid-job (a cut link, a restart, a killed session): whether the claim is
            # still ours is known only once it answers again
            log.warning("job %s: database error (%s); giving the job back once the database answers",
                        self.job["job_code"], str(getattr(exc, "orig", None) or exc).split("\n")[0])
            self.recover("database error; handed back")
        finally:
            if self.lost and not self._carried_unsure:  # writes that can no longer be written: their files go
                self._drop_deferred()
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _settle(self) -> None:
        try:
            self._load_history()
            self._resolve_input()
            self._probe_if_needed()
            self._apply(self._run_steps())
        except LostClaim:
            self.lose()
        except Cancelled:
            if self.lost:
                pass  # dropped: the job belongs to someone else now
            elif self.handing_back:
                self._requeue_interrupted("handed back by a stopping worker")
            else:
                self._finish("cancelled", error=("cancelled", "cancelled by request", ""))
        except MediamillError as exc:
            self._finish("failed", error=(exc.error_class, exc.message, getattr(exc, "stderr_tail", "")))

    def lose(self) -> None:
        """Our claim is gone (rescued, re-claimed or finished elsewhere): log it once, stop, write nothing more."""
        with self._lock:
            if self.lost:
                return
            self.lost = True
        log.warning("job %s: this worker lost its claim (rescued or finished elsewhere); dropping the job",
                    self.job["job_code"])
        self.cancel.set()

    def hand_back(self) -> None:
        """Stop now and give the job back to the queue (graceful shutdown past its grace period)."""
        self.handing_back = True
        self.cancel.set()

    def recover(self, reason: str = "worker error; retried") -> None:
        """After an unexpected error (the database went away): give the job back as soon as the database answers.

        Only its answer tells what became of the claim meanwhile: still ours, the job goes back to the queue
        (keeping its place); rescued or finished elsewhere (the lease lapsed while the link was down), the loss
        is logged and the job dropped (``_requeue_interrupted``). Until then the claim stays in the worker's hands
        (the heartbeat extends its lease whenever it can); a stopping worker gives up once it hands its jobs back,
        and the lapsed lease lets the job be rescued."""
        pause = 0.25
        while True:
            try:
                self._requeue_interrupted(reason)
                return
            except DATABASE_ERRORS as exc:
                if self.handing_back:
                    return
                if not isinstance(exc, CONNECTION_ERRORS) and self._deferred:
                    # the database answered and refused what waited (it can never be written): give the job
                    # back without it, its steps to run again
                    log.warning("job %s: the database refused its deferred writes (%s); dropped",
                                self.job["job_code"], str(getattr(exc, "orig", None) or exc).split("\n")[0])
                    self._carried_unsure = False  # refused, so rolled back
                    self._drop_deferred()
                    continue
                time.sleep(pause)
                pause = min(2 * pause, 2.0)

    def _requeue_interrupted(self, reason: str) -> None:
        """Give the job back at once, keeping its place; its running steps are marked interrupted (those that
        completed stay done)."""
        self._requeue(0, reason="interrupted", count_retry=False, event={"reason": reason}, interrupted=reason)

    # ------------------------------------------------------------------ history / input
    def _fresh(self) -> bool:
        j = self.job
        return (self.attempts <= 1 and not j["retry_count"] and not j["rescue_count"]
                and (j["run_number"] or 1) == 1)

    def _load_history(self) -> None:
        if self._fresh():
            return
        run = self.job["run_number"] or 1
        with self.svc.engine.connect() as conn:
            rows, outs = tx.step_history(conn, self.job["id"])
        rerun = self.job.get("rerun") or None
        # after a reprocess (which may change version) executions are matched by step name, else by step id
        index: dict[Any, int] = ({s.name: i for i, s in enumerate(self.steps)} if rerun is not None
                                 else {sid: i for i, sid in enumerate(self.wf.step_ids)})
        for sid, name, status, row_run, output_data in rows:
            i = index.get(name if rerun is not None else sid)
            if i is not None:
                self._apply_history(i, status, row_run or 1, run, output_data, rerun)
        if rerun is not None and any(st.status == "failed" for st in self.states):
            self.partial = True  # a step kept as failed (not part of this reprocess): the job stays partial
        by_step = {s.name: i for i, s in enumerate(self.steps)}
        for o in outs:
            i = by_step.get(o["step_name"])
            if i is not None and self.states[i].status == "completed":
                self.states[i].outputs.append({"name": o["name"], "key": o["storage_key"],
                                               "mime_type": o["mime_type"], "metadata": o["metadata"] or {},
                                               "bytes": o["bytes"], "checksum": o["checksum"]})

    def _apply_history(self, i: int, status: str, row_run: int, run: int, output_data: str | None,
                       rerun: dict[str, Any] | None) -> None:
        st = self.steps[i]
        again = rerun is not None and st.name in rerun.get("steps", []) and row_run < int(rerun.get("run", 0))
        state = self.states[i]
        if status == "failed":
            state.failures_total += 1  # attempts keep counting across runs
            state.failures_run += 1 if row_run == run else 0
        if again:
            return  # re-executed in this reprocess: its earlier outcome no longer stands
        if status in DONE_STEP:
            state.status = status
            state.data = json.loads(output_data) if output_data else {}
        elif rerun is not None and status == "failed" and row_run < run:
            state.status = "failed"  # kept as it was: this reprocess runs other steps

    def _resolve_input(self) -> None:
        key = self.job["input_key"]
        if key is None and self.job["input_url"]:
            key = self._fetch_url()
        if key is None:
            raise InvalidInput("the job has no input")
        local = self.svc.storage.local_path(key)
        if local is not None:
            if not local.is_file():
                raise InvalidInput("the job's input is missing from storage")
            self.input_path = local
        elif self._needs_input_file():
            self.input_path = self.svc.storage.get_to_file(key, self.scratch / "input")
        else:
            self.input_path = self.scratch / "input"

    def _needs_input_file(self) -> bool:
        """In-process steps read the input through the storage; a child needs a local copy, unless none of the
        steps still to run opens the input (or a ``when:`` condition needs the input probed). A run after a retry
        or a rescue skips the steps an earlier run finished."""
        return bool(self._probe_fields()) or any(
            (spec := get_action(s.action)) is None or (spec.isolated and spec.reads_input)
            for s, st in zip(self.steps, self.states, strict=True) if st.status not in FINISHED_STEP)

    def _probe_fields(self) -> set[str]:
        """The input's fields that ``when:`` conditions read and only a probe of the file can tell."""
        if self.job.get("input_metadata"):
            return set()
        return {a or b for s in self.steps if s.when for a, b in _INPUT_FIELD.findall(s.when)} - _KNOWN_WITHOUT_PROBE

    def _fetch_url(self) -> str:
        from mediamill.engine.fetch import fetch_to_storage

        key, mime, size = fetch_to_storage(self.svc.runtime, self.job["input_url"], self.job["tenant_id"],
                                           self.scratch)
        if not accepts(self.d.input_types, mime):
            raise UnsupportedFormat(f"workflow {self.d.code} accepts {', '.join(self.d.input_types)}; "
                                    f"the fetched file is {mime}")
        with self._guarded() as conn:
            tx.update_job(conn, self.job["id"], {"input_key": key, "input_mime": mime, "input_size": size,
                                                 "input_file_path": key})
        self.job.update(input_key=key, input_mime=mime, input_size=size)
        return key

    def _probe_if_needed(self) -> None:
        if not self._probe_fields():
            return  # mime, size and filename are on the job row already (or it was probed before)
        reply = self.svc.children.run({"probe": True, "input_path": str(self.input_path),
                                     "input_mime": self.job["input_mime"] or ""},
                                    timeout=60, on_progress=lambda _i, _p: None, cancelled=self.cancel)
        probe = reply.get("probe") or {}
        probe.update(mime=self.job["input_mime"] or "", size=self.job["input_size"] or 0,
                     filename=self.job["input_filename"] or "")
        text = json.dumps(probe, default=str)
        self.job["input_metadata"] = text  # stored with the first unit's start (or whatever write comes first)
        self._defer(_Record(lambda conn: tx.update_job(conn, self.job["id"], {"input_metadata": text})),
                    now=not self._may_defer())

    # ------------------------------------------------------------------ scheduling
    def _deps(self) -> list[list[int]]:
        by_name = {s.name: i for i, s in enumerate(self.steps)}
        if self.dag:
            return [[by_name[n] for n in (s.needs or [])] for s in self.steps]
        return [[i - 1] if i else [] for i in range(len(self.steps))]

    def _ready(self, deps: list[list[int]], running: set[int]) -> list[int]:
        return [i for i, st in enumerate(self.states)
                if st.status == "pending" and i not in running
                and all(self.states[d].status in FINISHED_STEP for d in deps[i])]

    def _run_steps(self) -> Outcome:
        """Run the steps until they are all done or one unit ends the job; say what the job came to."""
        deps = self._deps()
        outcome: Outcome = Continue()
        if self.dag:
            outcome = self._run_dag(deps)
        else:
            while isinstance(outcome, Continue) and (ready := self._ready(deps, set())):
                outcome = self._run_group(self._group_from(ready[0]))
        return Complete(self.partial) if isinstance(outcome, Continue) else outcome

    def _run_dag(self, deps: list[list[int]]) -> Outcome:
        """Steps with ``needs:`` run concurrently; the first unit to end the job (or to raise) stops
        new steps from starting, and the running ones finish before it is applied."""
        running: dict[Future[Outcome], int] = {}
        ended: Outcome | BaseException | None = None
        with ThreadPoolExecutor(max_workers=min(8, len(self.steps))) as pool:
            while True:
                if ended is None:
                    for i in self._ready(deps, set(running.values())):
                        self.states[i].status = "running"
                        running[pool.submit(self._run_group, [i])] = i
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    running.pop(fut)
                    got = fut.exception() or fut.result()
                    if ended is None and not isinstance(got, Continue):
                        ended = got
        if isinstance(ended, BaseException):
            raise ended
        return ended or Continue()

    def _group_from(self, start: int) -> list[int]:
        """Consecutive pending steps sharing a fuse key run as one unit (one decode, several outputs)."""
        spec = get_action(self.steps[start].action)
        group = [start]
        if spec is None or spec.fuse is None or not fuses(spec.fuse, self.job["input_mime"]):
            return group
        j = start + 1
        # a condition on the input or the job can be decided before the unit runs; one on earlier steps cannot
        while j < len(self.steps) and self.states[j].status == "pending" and \
                "steps" not in (self.steps[j].when or ""):
            nxt = get_action(self.steps[j].action)
            if nxt is None or nxt.fuse != spec.fuse or self.steps[j].parallel != self.steps[start].parallel:
                break
            group.append(j)
            j += 1
        return group

    # ------------------------------------------------------------------ one unit
    def _run_group(self, group: list[int]) -> Outcome:
        with bound_contextvars(step=" + ".join(self.steps[i].name for i in group)):
            return self._run_unit(group)

    def _run_unit(self, group: list[int]) -> Outcome:
        """Run one unit (a step, or fused steps); ``Continue`` lets the job go on, any other value ends this run."""
        if self.cancel.is_set():
            raise Cancelled()
        decisions = {i: self._decide(i) for i in group}
        runnable = [i for i in group if decisions[i][0]]
        if not runnable:
            self._record_decisions(decisions)
            return Continue()
        gates = self._gates(runnable)
        if isinstance(gates, Hold):
            return gates
        step_timeout = sum(self.steps[i].timeout_seconds for i in runnable)
        remaining = (self.deadline - utcnow()).total_seconds()
        if remaining <= 0:
            raise _workflow_timeout(self.d.timeout_minutes)
        chunk = self._chunked(runnable, min(step_timeout, remaining))
        if isinstance(chunk, Parked):
            return chunk
        exec_ids: dict[int, int] = {}  # filled by _ensure_started (_execute says when)
        started = utcnow()
        try:
            results = (self._join_chunk(chunk, runnable, min(step_timeout, remaining), exec_ids)
                       if chunk is not None else self._execute(runnable, min(step_timeout, remaining), exec_ids))
        except Cancelled:
            if not self.handing_back and not self.lost:
                self._ensure_started(runnable, exec_ids)
                self._record_failure(runnable, exec_ids, started, Failure("cancelled", "cancelled", False),
                                     status="cancelled")
            raise
        except MediamillError as exc:
            self._ensure_started(runnable, exec_ids)  # the child may have failed before the start was written
            fail = Failure.of(exc)
            if remaining <= step_timeout and exc.error_class == "timeout" and utcnow() >= self.deadline:
                fail = Failure.of(_workflow_timeout(self.d.timeout_minutes))
            return self._unit_failed(runnable, decisions, exec_ids, started, fail, gates, chunked=chunk is not None)
        outcome = self._complete(runnable, exec_ids, started, results, gates,
                                 ends_job=runnable == group and chunk is None and self._ends_job(group))
        if chunk is not None:
            self._close_chunk(chunk, runnable[0])
        if isinstance(outcome, Continue):
            self._record_decisions(decisions)
        return outcome

    def _unit_failed(self, runnable: list[int], decisions: dict[int, tuple[bool, str | None]],
                     exec_ids: dict[int, int], started: Any, fail: Failure, gates: dict[int, Gate], *,
                     chunked: bool = False) -> Outcome:
        if len(runnable) > 1 and fail.error_class != "invalid_input" and not chunked:
            # which step of the fused unit failed is unknown: run them one by one to find out (not for a
            # chunked unit: its failed segment was already retried alone, and the step's retry re-plans it)
            self._interrupt(runnable, exec_ids, started, f"fused unit failed ({fail.message[:SHORT_MESSAGE]}); "
                                                        "running its steps one by one")
            for i in runnable:
                outcome = self._run_unit([i])
                if not isinstance(outcome, Continue):
                    return outcome
            return Continue()
        # skips after the failed step were never reached; those before it are recorded
        self._record_decisions({i: d for i, d in decisions.items() if i < runnable[0]})
        return self._handle_failure(runnable, exec_ids, started, fail, gates)

    def _close_chunk(self, chunk: Any, i: int) -> None:
        if self.states[i].status == "completed":
            chunk.cleanup()  # the parts are joined
        else:
            chunk.discard()  # storing the renditions failed: the step's retry plans afresh

    def _chunked(self, group: list[int], timeout: float) -> Any:
        """A ``parallel:`` unit: its join once every segment finished, else ``Parked`` (the job is requeued)."""
        if self.steps[group[0]].parallel is None:
            return None
        from mediamill.engine.segments import prepare

        if self._deferred:  # segments guard their own transactions (``guard``): what waits is written first
            self._write_now()
        return prepare(self, group, timeout)

    def chunk_source(self) -> tuple[str, Path]:
        """Storage key and local path of the video a transcode unit reads (an earlier step's chainable
        video output, else the job's input), as ``StepContext.source_path("video/")`` finds it."""
        for st in reversed(self.states):
            if st.status != "completed" or not st.data.get("chainable", False):
                continue
            for out in st.outputs:
                if out["mime_type"].startswith("video/") and out.get("key"):
                    return out["key"], self._output_path(out)
        assert self.input_path is not None
        return self.job["input_key"], self.input_path

    def unit_params(self, group: list[int]) -> list[dict[str, Any]]:
        return [self.steps[i].params for i in group]

    def guard(self, conn: Any) -> None:
        """Raise ``LostClaim`` unless the job's claim is still ours (and extend its lease), in the caller's
        transaction (the runner's deferred writes were written before: see ``_chunked`` and ``_execute``)."""
        self._guard(conn)

    def _interrupt(self, group: list[int], exec_ids: dict[int, int], started: Any, reason: str) -> None:
        with self._guarded() as conn:
            for i in group:
                tx.finish_step(conn, job=self.job, exec_id=exec_ids[i], step_name=self.steps[i].name,
                               status="interrupted", started_at=started, error_message=reason)
                self.states[i].status = "pending"

    def _decide(self, i: int) -> tuple[bool, str | None]:
        """Evaluate step ``i``'s condition (recorded later, once the unit's fate is known)."""
        step = self.steps[i]
        if self.job.get("shadow_of") and acts_outside(step.action):
            return False, SHADOW_SKIP
        if not step.when:
            return True, None
        try:
            return evaluate_condition(step.when, self._variables()), None
        except ConditionError as exc:
            return False, str(exc)

    def _record_decisions(self, decisions: dict[int, tuple[bool, str | None]]) -> None:
        for i, (result, reason) in decisions.items():
            if not self.steps[i].when and result:
                continue
            if result:
                self._event("decision", self.steps[i].name, {"when": self.steps[i].when, "result": True})
            else:
                self._record_skip(i, reason)

    def _variables(self) -> dict[str, Any]:
        return condition_variables(JobFacts.of_job(self.job), workflow_type=self.d.type,
                                   steps={s.name: {"status": st.status, "data": st.data}
                                          for s, st in zip(self.steps, self.states, strict=True)})

    def _gates(self, runnable: list[int]) -> dict[int, Gate] | Hold:
        """The breakers' gates of the unit's steps, or a ``Hold`` when a breaker does not let its step run now."""
        gates: dict[int, Gate] = {}
        for i in runnable:
            action = self.steps[i].action
            gate = self.svc.breakers.gate(action, self.job["id"])
            if not gate.allowed:
                return Hold(gate.wait_seconds, action, self.steps[i].name)
            gates[i] = gate
        return gates

    def _start(self, group: list[int]) -> dict[int, int]:
        """Open the unit's executions: one transaction (fence, the writes deferred until now, executions, the
        job row, the events)."""
        ids: dict[int, int] = {}
        with self._guarded(mark=False) as conn:
            events = []
            for i in group:
                s = self.steps[i]
                attempt = self.states[i].failures_total
                ids[i] = tx.open_execution(conn, job=self.job, step_id=self.wf.step_ids[i], step_name=s.name,
                                           action=s.action, attempt=attempt, worker_id=self.svc.worker_id)
                events.append(tx.event_row(self.job, "step", s.name, {"status": "running", "action": s.action,
                                                                      "attempt": attempt, "execution_id": ids[i]}))
            # a step boundary: each bar starts at 0 % (in the same insert; the reports follow with the heartbeat)
            overall = self._overall()
            events += [tx.event_row(self.job, "progress", self.steps[i].name,
                                    {"percent": round(overall, 1), "step_percent": 0.0}) for i in group]
            self._write_job(conn, {"current_step": group[-1] + 1, "updated_at": utcnow()}, events)
        for i in group:
            self.states[i].status = "running"
        with self._lock:
            self._progress_seen.update(group)
            self._progress_event_mark = max(self._progress_event_mark, overall - overall % PROGRESS_EVENT_STEP)
        return ids

    def _overall(self) -> float:
        """The job's percentage: finished steps, plus the running steps' share."""
        done = sum(1 for st in self.states if st.status in FINISHED_STEP)
        running = sum(p for i, p in self._step_percent.items() if self.states[i].status not in FINISHED_STEP) / 100
        return min(99.9, 100.0 * (done + running) / max(1, len(self.steps)))

    def _fence(self, conn: Any) -> None:
        """The claim is still ours (its lease extended and its row locked until commit), or LostClaim."""
        if not tx.still_owner(conn, job=self.job, worker_id=self.svc.worker_id,
                              lease_seconds=self.svc.settings.lease_seconds):
            raise LostClaim()

    def _write_job(self, conn: Any, values: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """Update the job row and append events (one statement each), marking the job processing with its
        first write."""
        if not self.marked:
            now = events[0]["created_at"] if events else utcnow()  # the status event comes first, in time too
            values = {**values, **tx.processing_values(self.job, now)}
            events = [tx.processing_event(self.job, self.svc.worker_id, self.attempts, now), *events]
            self.marked = True
        if values:
            tx.update_job(conn, self.job["id"], values)
        tx.add_events(conn, events)

    def _guard(self, conn: Any) -> None:
        """The fence of every write about the job (``LostClaim`` when the claim is gone); the first one also
        marks the job processing."""
        self._fence(conn)
        if not self.marked:
            self._write_job(conn, {}, [])

    # ------------------------------------------------------------------ deferred writes
    # A unit's completion, a skipped step's record, a decision event and the input's probe need not have a
    # transaction of their own: in a sequential workflow they wait for the job's next write (the next unit's start,
    # which for a child's idempotent steps is written while the child already works; a failure's record; the
    # finish; a requeue) and go in its transaction, after its fence and the job's marking. Every transaction of
    # the runner carries them (``_guarded``, ``_finish``, ``_requeue``, ``_requeue_interrupted``); a lost claim
    # drops them with their stored outputs. A worker killed before that write loses them, as one killed just
    # before their own transaction did: the step runs again. Only the runner's thread touches the list: in a
    # ``needs:`` workflow (units in several threads) nothing waits.
    def _defer(self, write: _Deferred, now: bool) -> None:
        """Queue ``write`` for the job's next transaction, or (``now``) write it at once (with what waits)."""
        if now:
            self._write_now(write)
        else:
            self._deferred.append(write)

    def _write_now(self, write: _Deferred | None = None) -> None:
        """Write what waits (and ``write``) in a transaction of its own."""
        try:
            with self._guarded() as conn:
                if write is not None:
                    write.write(conn)
        except LostClaim:
            if write is not None:
                write.drop_outputs()
            raise
        if write is not None:
            write.committed()

    def _may_defer(self, group: list[int] | None = None) -> bool:
        """Writes can wait in a sequential workflow (with ``needs:``, units run in several threads at once),
        except a ``parallel:`` unit's completion: its segments' parts are deleted once it is recorded."""
        return not self.dag and (group is None or self.steps[group[0]].parallel is None)

    def _carry(self, conn: Any, touch_job: bool = True) -> list[_Deferred]:
        """Write what waits in ``conn`` (whose claim was checked), the job marked processing first if it was not
        yet (its trail then reads queued → processing → ...); ``_settled`` once the transaction committed."""
        flushed = list(self._deferred)
        if not flushed:
            return flushed
        if not self.marked:
            self._write_job(conn, {}, [])
        self._carried_unsure = True
        for d in flushed:
            d.write(conn, touch_job=touch_job)
        return flushed

    def _settled(self, flushed: list[_Deferred]) -> None:
        """The transaction that carried ``flushed`` committed."""
        if not flushed:
            return
        del self._deferred[:len(flushed)]
        self._carried_unsure = False
        for d in flushed:
            d.committed()

    def _drop_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for d in deferred:
            d.drop_outputs()

    @contextmanager
    def _guarded(self, mark: bool = True) -> Iterator[Any]:
        """A transaction about the job: fenced on its claim (marking it processing with the first, unless
        ``mark`` is off because the caller writes the job row itself), carrying the deferred writes."""
        with self.svc.engine.begin() as conn:
            if mark:
                self._guard(conn)
            else:
                self._fence(conn)
            flushed = self._carry(conn)
            yield conn
        self._settled(flushed)

    # ------------------------------------------------------------------ execution
    def _task(self, group: list[int], timeout: float) -> dict[str, Any]:
        steps = []
        for i in group:
            s = self.steps[i]
            own = min(float(s.timeout_seconds), timeout)
            steps.append({"action": s.action, "params": s.params, "step_name": s.name, "timeout": own,
                          "attempt": self.states[i].failures_total, "work_dir": str(self.scratch / f"step-{i}")})
        spec = get_action(self.steps[group[0]].action)
        return {"steps": steps, "fuse": spec.fuse if spec and len(group) > 1 else None,
                "input_path": str(self.input_path), "input_mime": self.job["input_mime"] or "",
                "job": {"id": self.job["id"], "job_code": self.job["job_code"], "priority": self.job["priority"],
                        "metadata": self.job.get("job_metadata") or {}, "params": self.job.get("params") or {},
                        "submitter": self.job.get("submitted_by"), "workflow": self.d.code},
                "previous": self._previous(fetch=any(self._reads_outputs(i) for i in group)),
                "cpu_seconds": int(timeout) + 5,
                "log": {k: v for k, v in get_contextvars().items() if k in ("job_id", "step", "worker", "request_id")}}

    def _reads_outputs(self, i: int) -> bool:
        spec = get_action(self.steps[i].action)
        return spec is None or spec.reads_outputs

    def _previous(self, *, fetch: bool) -> list[dict[str, Any]]:
        """Earlier completed steps as a child's task lists them; their outputs' files copied to scratch from object
        storage when ``fetch`` (a unit of steps that never open them gets their local path or none)."""
        prior = []
        for s, st in zip(self.steps, self.states, strict=True):
            if st.status != "completed":
                continue
            paths = [self._output_path(o) if fetch else self._local_path(o) for o in st.outputs]
            outs = [{**o, "path": str(path or "")} for o, path in zip(st.outputs, paths, strict=True)]
            prior.append({"name": s.name, "action": s.action, "status": st.status, "data": st.data,
                          "outputs": outs})
        return prior

    def _local_path(self, out: dict[str, Any]) -> Path | None:
        """Where an earlier output is on this host without a download (its file, or local storage's), or None."""
        if out.get("path"):
            return Path(out["path"])
        return self.svc.storage.local_path(out["key"])

    def _output_path(self, out: dict[str, Any]) -> Path:
        local = self._local_path(out)
        if local is not None:
            return local
        dest: Path = self.scratch / "prior" / out["name"]
        if not dest.exists():
            self.svc.storage.get_to_file(out["key"], dest)
        out["path"] = str(dest)
        return dest

    def _join_chunk(self, chunk: ChunkJoin, group: list[int], timeout: float,
                    exec_ids: dict[int, int]) -> list[dict[str, Any]]:
        """Join a chunked unit whose segments all finished (its start is written first)."""
        self._ensure_started(group, exec_ids)
        return chunk.execute(timeout, lambda _k, pct: self.progress(group[0], pct, exec_ids[group[0]]))

    def _ensure_started(self, group: list[int], exec_ids: dict[int, int]) -> None:
        """Write the unit's start (its executions, fenced on the claim) unless it was written already."""
        if not exec_ids:
            exec_ids.update(self._start(group))

    def _execute(self, group: list[int], timeout: float, exec_ids: dict[int, int]) -> list[dict[str, Any]]:
        """Run the unit. Its start is written first, except for a unit of idempotent steps in a child: that one
        starts at once and its start is written while the child works (a lost claim then stops the child within
        the write's time, and nothing it did is recorded). Steps with effects outside wait for the write."""
        spec = get_action(self.steps[group[0]].action)
        if self.steps[group[0]].action == DELIVER_ACTION:
            from mediamill.engine.delivery import deliver_outputs

            self._ensure_started(group, exec_ids)
            return [deliver_outputs(self, group[0], exec_ids[group[0]])]
        if spec is not None and not spec.isolated and len(group) == 1:
            self._ensure_started(group, exec_ids)
            return [self._inline(group[0], timeout)]
        if not all((s := get_action(self.steps[i].action)) is not None and s.idempotent for i in group):
            self._ensure_started(group, exec_ids)
        reply = self.svc.children.run(self._task(group, timeout), timeout=timeout + 5,
                                    on_progress=lambda k, pct: self.progress(group[k], pct, exec_ids[group[k]]),
                                    cancelled=self.cancel,
                                    on_start=lambda _child: self._ensure_started(group, exec_ids))
        if not reply.get("ok"):
            raise _error_from(reply)
        return list(reply["results"])

    def _inline(self, i: int, timeout: float) -> dict[str, Any]:
        from mediamill.engine.inline import run_inline

        return run_inline(self.steps[i], input_path=self.input_path, input_mime=self.job["input_mime"],
                          work_dir=self.scratch / f"step-{i}", job=self.job, attempt=self.states[i].failures_total,
                          timeout=timeout)

    def progress(self, i: int, pct: float, exec_id: int) -> None:
        """Note a step's progress. Nothing is written here: the worker's heartbeat writes the progress of all its
        jobs in its own transaction (see ``take_progress``)."""
        if pct >= 100 or self.lost:
            return  # 100 % is written with the step's completion
        with self._lock:
            self._progress_pending[i] = (pct, exec_id)
            self._step_percent[i] = pct

    def progress_due(self, now: float, every: float) -> bool:
        """Progress waits and was last written ``every`` seconds ago or more."""
        return bool(self._progress_pending) and now - self._last_progress >= every

    def take_progress(self, now: float, min_gap: float) -> tuple[tx.Progress, Callable[[], None]] | None:
        """The progress to write now (none if nothing is new, or the last write is under ``min_gap`` old),
        and what to call once it is committed. A progress event goes with each step's first write (unless its
        start wrote one) and each time the job crosses a multiple of PROGRESS_EVENT_STEP %."""
        with self._lock:
            if self.lost or not self._progress_pending or now - self._last_progress < min_gap:
                return None
            pending, self._progress_pending = self._progress_pending, {}
            self._last_progress = now
            overall = self._overall()
        band = overall >= self._progress_event_mark + PROGRESS_EVENT_STEP
        events = [(self.steps[i].name, overall, pct) for n, (i, (pct, _e)) in enumerate(sorted(pending.items()))
                  if i not in self._progress_seen or (band and n == 0)]

        def written() -> None:
            self._progress_seen.update(pending)
            if band:
                self._progress_event_mark = overall - overall % PROGRESS_EVENT_STEP

        steps = {exec_id: pct for pct, exec_id in pending.values()}
        return tx.Progress(job=self.job, percent=overall, steps=steps, events=events), written

    # ------------------------------------------------------------------ outcomes
    def _store_outputs(self, i: int, result: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        finalize_later = any(s.action == "finalize_job" for s in self.steps[i + 1:])
        taken = {o["name"] for j, st in enumerate(self.states) if j != i for o in st.outputs}
        for out in result.get("outputs", []):
            if out["name"] in taken:  # two steps made the same name: keep both, the later one suffixed
                stem, suffix = Path(out["name"]).stem, Path(out["name"]).suffix
                out["name"] = f"{Path(out['name']).parent / f'{stem}_step{i + 1}{suffix}'}".removeprefix("./")
            taken.add(out["name"])
            path = Path(out["path"])
            suffix = Path(out["name"]).suffix
            kind = "shadow" if self.job.get("shadow_of") else "outputs"  # shadow runs write into a sandbox
            info = self.svc.storage.put_file(new_key(kind, self.job["tenant_id"], suffix=suffix), path,
                                           content_type=out["mime_type"], move=True)
            local = self.svc.storage.local_path(info.key)
            out["path"] = str(local if local is not None else path)
            rows.append({"name": out["name"], "storage_key": info.key, "mime_type": out["mime_type"],
                         "bytes": info.size, "checksum": info.checksum, "metadata": out.get("metadata") or {},
                         "visible": not finalize_later})
            out["key"], out["bytes"], out["checksum"] = info.key, info.size, info.checksum
        return rows

    def _complete(self, group: list[int], exec_ids: dict[int, int], started: Any, results: list[dict[str, Any]],
                  gates: dict[int, Gate], ends_job: bool = False) -> Outcome:
        try:
            stored = {i: self._store_outputs(i, r) for i, r in zip(group, results, strict=True)}
        except (OSError, ResourceExceeded) as exc:  # local storage reports a full disk as StorageFull
            err = classify_exception(exc)
            if err.error_class != "resource":
                raise
            # storage is full: the step's work is lost, its failure is a resource one (retried after back-off)
            return self._handle_failure(group, exec_ids, started, Failure.of(err), gates)
        write = _Completion(self, group, exec_ids, started, results, stored, gates)
        write.apply()
        if ends_job:  # the job's last unit: written with the job's finish, in one transaction (see _finish)
            self._deferred.append(write)
            self.slot_done()
            return Continue()
        self._defer(write, now=not self._may_defer(group))
        return Continue()

    def _ends_job(self, group: list[int]) -> bool:
        """Whether ``group`` is the job's last unit (sequential steps, no condition left to record), so that
        its completion can be written with the job's final status."""
        if self.dag or group[-1] != len(self.steps) - 1:
            return False
        if any(self.steps[i].when or self.steps[i].action == "finalize_job" for i in group):
            return False
        return all(st.status in FINISHED_STEP for j, st in enumerate(self.states) if j not in group)

    def _record_failure(self, group: list[int], exec_ids: dict[int, int], started: Any, fail: Failure,
                        status: str = "failed") -> None:
        first, rest = group[0], group[1:]  # bad input is blamed on the unit's first step; the rest did not run
        with self._guarded() as conn:
            tx.finish_step(conn, job=self.job, exec_id=exec_ids[first], step_name=self.steps[first].name,
                           status=status, started_at=started, error_message=fail.message[:MESSAGE_MAX],
                           error_class=fail.error_class, stderr_tail=fail.stderr_tail[-STDERR_TAIL:] or None)
            if rest:  # they were only opened with the unit and did no work of their own: no execution is left
                tx.delete_executions(conn, [exec_ids[i] for i in rest])
                for i in rest:
                    tx.add_event(conn, self.job, "step", self.steps[i].name,
                                 {"status": "pending", "reason": f"{self.steps[first].name} failed in the same unit"})
        self.states[first].status = "failed"
        self.states[first].failures_total += 1
        self.states[first].failures_run += 1
        for i in group[:1] if not self.job.get("shadow_of") else []:
            telemetry.emit("step.finished", action=self.steps[i].action, status=status, error_class=fail.error_class,
                           duration_s=(utcnow() - started).total_seconds(), workflow=self.d.code)

    def _handle_failure(self, group: list[int], exec_ids: dict[int, int], started: Any, fail: Failure,
                        gates: dict[int, Gate]) -> Continue | Retry | FailJob:
        """Record the unit's failure and decide (``outcomes.after_failure``) what the job does next."""
        runs_before = self.states[group[0]].failures_run
        self._record_failure(group, exec_ids, started, fail)
        for i in group[1:]:
            self.states[i].status = "pending"
        if not self.job.get("shadow_of"):
            self.svc.breakers.record_failure(self.steps[group[0]].action, fail.error_class, gates[group[0]].probe,
                                           fail.message)
        step = self.steps[group[0]]
        policy = FailurePolicy(self.d.step_retries(step), self.svc.retry_policy)
        outcome = after_failure(step, fail, runs_before, policy)
        if isinstance(outcome, Continue):
            self.partial = True
        return outcome

    # ------------------------------------------------------------------ applying the outcome
    def _apply(self, outcome: Outcome) -> None:
        """Write what the job came to: the one place a runner ends its job or gives it back to the queue."""
        if isinstance(outcome, Retry):
            self._retry(outcome)
        elif isinstance(outcome, Hold):
            self._hold(outcome)
        elif isinstance(outcome, FailJob):
            fail = outcome.failure
            self._finish(JobStatus.FAILED, error=(fail.error_class, outcome.message, fail.stderr_tail),
                         failed_step=outcome.step)
        elif isinstance(outcome, Complete):
            self._finish(outcome.status)

    def _retry(self, r: Retry) -> None:
        self._requeue(r.delay, reason="retry", count_retry=True, event=retry_event(r))

    def _hold(self, h: Hold) -> None:
        self._requeue(h.delay, reason=f"breaker:{h.action}", count_retry=False,
                      event={"reason": "breaker open", "action": h.action, "step": h.step})

    def _requeue(self, delay: float, *, reason: str, count_retry: bool, event: dict[str, Any],
                 interrupted: str | None = None) -> None:
        """Give the job back to its queue for ``delay`` seconds (``interrupted``: at once, keeping its place, its
        running steps marked so), with the writes deferred until now before the requeue's own events."""
        self.releasing = True
        now = utcnow()
        try:
            with self.svc.engine.begin() as conn:
                if self._deferred:
                    self._fence(conn)  # (``tx.requeue`` fences itself, after what it carries)
                flushed = self._carry(conn)
                if not tx.requeue(conn, job=self.job, worker_id=self.svc.worker_id, delay=delay, reason=reason,
                                  count_retry=count_retry, event=event, keep_place=interrupted is not None):
                    raise LostClaim()  # (rolled back with whatever it carried)
                if interrupted is not None:
                    tx.interrupt_running_steps(conn, self.job["id"], now, interrupted)
        except LostClaim:
            self._carried_unsure = False  # rolled back
            self.lose()
            return
        self._settled(flushed)
        self.svc.wake_later(self.job["queue_name"], delay)

    def _finish(self, status: str, error: tuple[str, str, str] | None = None, failed_step: str | None = None) -> None:
        klass, message, tail = error or (None, None, None)
        outputs: list[dict[str, Any]] | None = None
        if self._fresh() and not any(st.outputs for st in self.states):
            outputs = []  # nothing was stored: no need to read the job's outputs back
        finish = tx.Finish(job=self.job, status=status, workflow_code=self.d.code, workflow_type=self.d.type,
                           workflow_version=self.wf.version, total_steps=len(self.steps),
                           error_message=message, error_class=klass, stderr_tail=tail or None,
                           failed_step=failed_step, outputs=outputs)
        self.releasing = True
        flushed: list[_Deferred] = []

        def before() -> None:  # (a success writes the job's progress itself)
            flushed.extend(self._carry(conn, touch_job=status not in SUCCEEDED_JOB))

        with self.svc.engine.begin() as conn:
            accepted = tx.finish_jobs(conn, self.svc.worker_id, [finish], before=before)
        if not accepted:
            self.lose()  # the deferred writes are dropped with their outputs (``_run``)
            return
        self._settled(flushed)
        log.info("job %s: %s%s", self.job["job_code"], status, f" ({klass}: {message})" if klass else "")
        self.svc.job_finished(self.job, status, self.d.code, klass)

    # ------------------------------------------------------------------ small records
    def _record_skip(self, i: int, reason: str | None) -> None:
        """A step skipped by its condition (or in a shadow run): its execution record and decision event."""
        self.states[i].status = "skipped"
        s, at = self.steps[i], utcnow()

        def write(conn: Any) -> None:
            tx.record_execution(conn, {
                "job_id": self.job["id"], "step_id": self.wf.step_ids[i], "status": "skipped", "started_at": at,
                "completed_at": at, "duration_seconds": 0, "duration_ms": 0, "action": s.action,
                "step_name": s.name, "worker_id": self.svc.worker_id, "run_number": self.job["run_number"] or 1,
                "error_message": reason})
            tx.add_event(conn, self.job, "decision", s.name,
                         {"when": s.when, "result": False, "skipped": True,
                          **({"error": reason} if reason and reason != SHADOW_SKIP else {}),
                          **({"reason": reason} if reason == SHADOW_SKIP else {})})

        self._defer(_Record(write), now=not self._may_defer())

    def _event(self, kind: str, step: str | None, data: dict[str, Any]) -> None:
        self._defer(_Record(lambda conn: tx.add_event(conn, self.job, kind, step, data)), now=not self._may_defer())


@dataclass
class _Record:
    """A plain write about the job (a fact of its row, an event, a skipped step's record), in whatever
    transaction carries it: nothing follows it and nothing was stored for it."""

    fn: Callable[[Any], None]

    def write(self, conn: Any, touch_job: bool = True) -> None:
        self.fn(conn)  # (its own rows and columns: written in every case)

    def committed(self) -> None:
        """Nothing follows."""

    def drop_outputs(self) -> None:
        """Nothing was stored."""


@dataclass
class _Completion:
    """A unit's successful completion: the runner's state (``apply``, at once), its database writes (``write``,
    in the transaction that carries them) and what follows once they are committed (``committed``)."""

    runner: JobRunner
    group: list[int]
    exec_ids: dict[int, int]
    started: Any
    results: list[dict[str, Any]]
    stored: dict[int, list[dict[str, Any]]]
    gates: dict[int, Gate]
    at: datetime = field(default_factory=utcnow)  # when the unit ended (its steps' ``completed_at``)
    before: int = 0  # steps finished before this unit (the job's percentage after each of its steps)

    def apply(self) -> None:
        """The unit's steps are completed for the runner: the next unit's conditions and inputs see them."""
        r = self.runner
        self.before = sum(1 for j, st in enumerate(r.states) if j not in self.group and st.status in FINISHED_STEP)
        for i, res in zip(self.group, self.results, strict=True):
            st = r.states[i]
            st.status = "completed"
            st.data = res.get("data") or {}
            st.outputs = [{"name": o["name"], "key": o.get("key"), "path": o["path"], "mime_type": o["mime_type"],
                           "metadata": o.get("metadata") or {}, "bytes": o.get("bytes"),
                           "checksum": o.get("checksum")} for o in res.get("outputs", [])]

    def write(self, conn: Any, touch_job: bool = True) -> None:
        r = self.runner
        for n, (i, res) in enumerate(zip(self.group, self.results, strict=True)):
            tx.finish_step(conn, job=r.job, exec_id=self.exec_ids[i], step_name=r.steps[i].name, status="completed",
                           started_at=self.started, output_data=jsontext.dumps(res.get("data") or {}),
                           outputs=self.stored[i], progress=min(99.9, 100.0 * (self.before + n + 1) / len(r.steps)),
                           touch_job=touch_job, at=self.at)
            if r.steps[i].action == "finalize_job":
                tx.show_outputs(conn, r.job["id"])

    def drop_outputs(self) -> None:
        for rows in self.stored.values():
            for row in rows:
                self.runner.svc.storage.delete(row["storage_key"])

    def committed(self) -> None:
        r = self.runner
        if r.job.get("shadow_of"):
            return  # a shadow run never moves a breaker or the figures
        for i in self.group:
            r.svc.breakers.record_success(r.steps[i].action, self.gates[i].probe)
            telemetry.emit("step.finished", action=r.steps[i].action, status="completed", error_class=None,
                           duration_s=(self.at - self.started).total_seconds(), workflow=r.d.code)


_Deferred = _Completion | _Record  # what waits for the job's next transaction (``JobRunner._defer``)


def _workflow_timeout(minutes: int) -> MediamillError:
    from mediamill.errors import StepTimeout

    return StepTimeout(f"the job exceeded the workflow's timeout of {minutes} minutes")


def _error_from(reply: dict[str, Any]) -> MediamillError:
    from mediamill.errors import ToolFailed

    return ToolFailed(reply.get("message") or "step failed", stderr_tail=reply.get("stderr_tail") or "",
                      error_class=reply.get("error_class") or "internal", retryable=reply.get("retryable"))
