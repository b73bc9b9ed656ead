"""How a submitted job looks on the terminal — the same in local and remote mode: the submitted line,
the progress bars, the outcome and its outputs, and the hints for jobs that would wait forever."""

from __future__ import annotations

from typing import Any

import typer

from mediamill.cli.output import console, err_console, print_json, print_table
from mediamill.statuses import SUCCEEDED_JOB


def print_submitted(job: dict[str, Any]) -> None:
    """The line `submit` prints (local and remote mode)."""
    console.print(f"submitted {job['job_code']} (id {job['id']}) to {job['workflow']} v{job['workflow_version']}, "
                  f"queue {job['queue']}, priority {job['priority']}", highlight=False)
    if job.get("routing"):
        console.print(f"  routed: {job['routing']['reason']}", highlight=False, markup=False)


def finish_submit(job: dict[str, Any], detail: dict[str, Any], json_: bool) -> None:
    """What `submit --wait` prints when the job ended, and its exit code."""
    if json_:
        print_json({**job, "status": detail["status"], "outputs": detail["outputs"]})
    else:
        print_outputs(detail)
    if detail["status"] in ("failed", "cancelled"):
        raise typer.Exit(1)


def explain_review(job_id: int, routing: dict[str, Any], *, waiting: bool) -> None:
    """Say why a job waits in review and how it gets out (rather than waiting for a worker forever)."""
    hint = f"route it: mediamill route {job_id} {(routing.get('candidates') or ['WORKFLOW'])[0]}"
    err_console.print(f"job {job_id} waits in review ({routing['reason']}); {hint}, or add a routing rule "
                      "(mediamill routes add)" + ("; not waiting for it" if waiting else ""),
                      highlight=False, markup=False, soft_wrap=True)


def warn_no_worker(queue: str) -> None:
    """The warning `submit` prints when no live worker serves the job's queue (local and remote mode)."""
    err_console.print(f"warning: no live worker serves queue {queue!r}; the job waits until one starts "
                      f"(`mediamill worker --pool {queue}=1`, or `mediamill serve`)", highlight=False, markup=False)


def step_bar(step: dict[str, Any]) -> dict[str, Any]:
    """What a step's bar shows: its label, how full it is and the figure beside it."""
    return {"description": f"  {step['step_name']} [{step['status']}]",
            **bar_fields(step["status"], step["progress_percent"])}


def bar_fields(status: str, percent: float | None) -> dict[str, Any]:
    """How full a bar is and the figure beside it, for a job or step in ``status`` at ``percent``."""
    if status == "skipped":  # nothing was done: an empty bar, not a full one
        return {"completed": 0, "shown": "skipped"}
    if status in SUCCEEDED_JOB:
        percent = 100.0
    value = float(percent or 0)
    return {"completed": value, "shown": f"{value:5.1f}%"}


def outcome_line(detail: dict[str, Any]) -> str:
    """``JOB-…: status`` and why, when it did not simply complete (a partial job names its failed steps)."""
    reason = detail.get("error_message")
    if detail["status"] == "partial" and not reason:
        latest = {s["step_name"]: s for s in detail["steps"]}  # a step's last execution
        failed = [s for s in latest.values() if s["status"] == "failed"]
        reason = "; ".join(f"step {s['step_name']!r} failed ({s['error_class']}): {s['error_message']}"
                           for s in failed) or "a step failed"
    return f"{detail['job_code']}: {detail['status']}" + (f" — {reason}" if reason else "")


def print_outputs(detail: dict[str, Any]) -> None:
    console.print(outcome_line(detail), highlight=False, markup=False)
    if detail["outputs"]:
        print_table(detail["outputs"], ["name", "mime_type", "bytes", "step_name", "storage_key"], title="outputs")
