"""Steps whose action is declared ``isolated=False`` (the test actions, cheap user actions) run in the
worker process itself; a job made only of such steps takes the fast path: run in memory, written
in one batched transaction with other jobs (this is what makes the engine itself cheap)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamill.actions.base import StepContext, get_action
from mediamill.engine.outcomes import Complete, Continue, Failure, FailurePolicy, Retry, after_failure
from mediamill.errors import InternalError, MediamillError, classify_exception
from mediamill.statuses import JobStatus, StepStatus
from mediamill.store import jsontext
from mediamill.store import lifecycle as tx
from mediamill.store.timeutil import utcnow
from mediamill.workflows.conditions import ConditionError, JobFacts, condition_variables, evaluate_condition
from mediamill.workflows.models import DELIVER_ACTION, StepDef

if TYPE_CHECKING:
    from mediamill.engine.services import RunServices
    from mediamill.store.workflow_repo import VersionedWorkflow


def _context(*, action: str, params: dict[str, Any], step_name: str, input_path: Path, input_mime: str,
             work_dir: Path, job: dict[str, Any], attempt: int, timeout: float | None) -> StepContext:
    spec = get_action(action)
    if spec is None:
        raise InternalError(f"unknown action {action!r}")
    return StepContext(input_path=input_path, input_mime=input_mime, work_dir=work_dir,
                       params=spec.validate_params(params), step_name=step_name, job=job, attempt=attempt,
                       timeout_seconds=timeout, action=action)


def _call(ctx_args: dict[str, Any]) -> dict[str, Any]:
    ctx = _context(**ctx_args)
    spec = get_action(ctx_args["action"])
    assert spec is not None
    try:
        result = spec.fn(ctx)
    except MediamillError:
        raise
    except Exception as exc:
        raise classify_exception(exc) from exc
    return {"outputs": [{"name": o.name, "path": str(o.path), "mime_type": o.mime_type, "metadata": o.metadata}
                        for o in result.outputs], "data": result.data}


def run_inline(s: StepDef, *, input_path: Path | None, input_mime: str | None, work_dir: Path,
               job: dict[str, Any], attempt: int, timeout: float) -> dict[str, Any]:
    """Run one step of a normal-path job in this process."""
    return _call({"action": s.action, "params": s.params, "step_name": s.name,
                  "input_path": input_path or Path("/nonexistent"), "input_mime": input_mime or "",
                  "work_dir": work_dir, "job": {"id": job["id"], "job_code": job["job_code"]},
                  "attempt": attempt, "timeout": timeout})


def fast_eligible(wf: VersionedWorkflow) -> bool:
    """Every step inline, sequential, no fusion, no condition on the probed input."""
    for s in wf.definition.steps:
        spec = get_action(s.action)
        if spec is None or spec.isolated or spec.fuse or s.needs is not None or s.action == DELIVER_ACTION:
            return False
        if s.when and "input" in s.when:
            return False
    return len(wf.step_ids) == len(wf.definition.steps)


@dataclass
class FastRetry:
    """A fast-path job to requeue (``retry``), with the executions it recorded, for the batch writer."""

    job: dict[str, Any]
    steps: list[tx.StepRecord]
    retry: Retry
    queue: str
    workflow_code: str = ""

    @property
    def delay(self) -> float:
        return self.retry.delay


def run_fast(svc: RunServices, claimed: tx.Claimed, wf: VersionedWorkflow) -> tx.Finish | FastRetry | None:
    """Run a fresh all-inline job in memory; returns its outcome for the batch writer.

    None means the job must take the normal path after all (a breaker is not closed)."""
    d = wf.definition
    job = claimed.job
    records: list[tx.StepRecord] = []
    statuses: dict[str, dict[str, Any]] = {}
    partial = False
    for i, s in enumerate(d.steps):
        if not svc.breakers.is_closed(s.action):
            return None
        now = utcnow()
        if s.when and not _when(s.when, job, statuses, d.type):
            records.append(tx.StepRecord(wf.step_ids[i], s.name, s.action, "skipped", now, now))
            statuses[s.name] = {"status": "skipped", "data": {}}
            continue
        try:
            result = _call({"action": s.action, "params": s.params, "step_name": s.name,
                            "input_path": Path("/nonexistent"), "input_mime": job["input_mime"] or "",
                            "work_dir": svc.scratch_dir, "job": {"id": job["id"], "job_code": job["job_code"]},
                            "attempt": 0, "timeout": s.timeout_seconds})
        except MediamillError as exc:
            rec = tx.StepRecord(wf.step_ids[i], s.name, s.action, StepStatus.FAILED, now, utcnow(),
                                error_message=exc.message, error_class=exc.error_class)
            records.append(rec)
            # a fresh job: the step has not failed before in this run
            outcome = after_failure(s, Failure.of(exc), 0, FailurePolicy(d.step_retries(s), svc.retry_policy))
            if isinstance(outcome, Continue):
                partial = True
                statuses[s.name] = {"status": StepStatus.FAILED, "data": {}}
                continue
            if isinstance(outcome, Retry):
                return FastRetry(job, records, outcome, d.queue_name, d.code)
            return tx.Finish(job=job, status=JobStatus.FAILED, workflow_code=d.code, workflow_type=d.type,
                             workflow_version=wf.version, total_steps=len(d.steps), steps=records,
                             error_message=outcome.message, error_class=exc.error_class, failed_step=outcome.step)
        if result["outputs"]:
            return None  # an inline action that makes files: the normal path stores them (steps are idempotent)
        records.append(tx.StepRecord(wf.step_ids[i], s.name, s.action, "completed", now, utcnow(),
                                     output_data=jsontext.dumps(result["data"])))
        statuses[s.name] = {"status": "completed", "data": result["data"]}
    return tx.Finish(job=job, status=Complete(partial).status, workflow_code=d.code,
                     workflow_type=d.type, workflow_version=wf.version, total_steps=len(d.steps), steps=records,
                     outputs=[])


def _when(expr: str, job: dict[str, Any], statuses: dict[str, Any], wtype: str) -> bool:
    try:
        return evaluate_condition(expr, condition_variables(JobFacts.of_job(job), workflow_type=wtype,
                                                            steps=statuses))
    except ConditionError:
        return False
