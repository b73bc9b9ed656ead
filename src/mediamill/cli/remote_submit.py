"""`mediamill submit` against a server: a tus upload with a progress bar, then (``--wait``) a bar for the
job and one per step, live from the job's event stream."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from mediamill.cli.output import err_console, print_json
from mediamill.client import models as m

if TYPE_CHECKING:
    from mediamill.client import Client


def submit_remote(mm: Client, file: Path, *, workflow: str | None, priority: int | None, params: dict[str, Any],
                  wait: bool, json_: bool) -> None:
    """Upload ``file``, submit it, and print what local mode prints (``--json``: the API's JSON)."""
    from mediamill.cli.engine_cmds import finish_submit, print_submitted

    if not file.is_file():
        from mediamill.errors import InvalidInput

        raise InvalidInput(f"no such file: {file}")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=err_console, disable=json_, transient=True)
    with progress:
        task = progress.add_task(f"upload {file.name}", total=file.stat().st_size)
        accepted = mm.submit(file, workflow=workflow, priority=priority, params=params or None,
                             on_upload_progress=lambda sent, total: progress.update(task, completed=sent,
                                                                                    total=total))
    job = accepted.to_dict()
    job.pop("links", None)
    job.pop("replayed", None)
    if not wait:
        if json_:
            print_json(accepted.to_dict())
        else:
            print_submitted(job)
        return
    follow(mm, accepted.id, accepted.job_code, quiet=json_)
    detail = {k: v for k, v in mm.job(accepted.id).to_dict().items() if k != "links"}
    finish_submit(accepted.to_dict() if json_ else job, detail, json_)


def follow(mm: Client, job_id: int, job_code: str, *, quiet: bool) -> None:
    """Draw the job's bar and one per step from its event stream until it ends."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                        TimeElapsedColumn(), console=err_console, disable=quiet)
    bars: dict[str, TaskID] = {}
    with progress:
        overall = progress.add_task(f"{job_code} [queued]", total=100)
        for event in mm.events(job_id):
            _draw(progress, bars, overall, job_code, event)


def _draw(progress: Progress, bars: dict[str, TaskID], overall: TaskID, job_code: str, event: m.Event) -> None:
    step = event.step
    if step and step not in bars:
        bars[step] = progress.add_task(f"  {step}", total=100)
    if isinstance(event, m.ProgressEvent):
        progress.update(overall, completed=event.percent)
        if step:
            progress.update(bars[step], completed=event.step_percent)
    elif isinstance(event, m.StepEvent) and step:
        progress.update(bars[step], description=f"  {step} [{event.status}]")
        if event.status in ("completed", "skipped"):
            progress.update(bars[step], completed=100.0)
    elif isinstance(event, m.StatusEvent):
        progress.update(overall, description=f"{job_code} [{event.status}]")
        if event.status in ("completed", "partial"):
            progress.update(overall, completed=100)
