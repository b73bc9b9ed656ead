"""`mediamill submit` against a server: a tus upload with a progress bar, then (``--wait``) a bar for the
job and one per step, live from the job's event stream."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from mediamill.cli.jobview import bar_fields, explain_review, finish_submit, print_submitted, warn_no_worker
from mediamill.cli.output import err_console, print_json
from mediamill.client import models as m

if TYPE_CHECKING:
    from mediamill.client import Client


def submit_remote(mm: Client, file: Path, *, workflow: str | None, priority: int | None, params: dict[str, Any],
                  wait: bool, json_: bool) -> None:
    """Upload ``file``, submit it, and print what local mode prints (``--json``: the API's JSON)."""

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
    if accepted.status == "pending" and accepted.routing:  # in review: a person routes it, no worker will
        explain_review(accepted.id, accepted.routing, waiting=wait and not json_)
        if wait:
            raise typer.Exit(1)
    else:
        _warn_without_worker(mm, accepted.queue)
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


def _warn_without_worker(mm: Client, queue: str) -> None:

    pools = [w.to_dict().get("pools") for w in mm.workers()]
    if not any(isinstance(p, dict) and (queue in p or "*" in p) for p in pools):
        warn_no_worker(queue)


def output_opener(mm: Client, job_id: int) -> Callable[[dict[str, Any]], BinaryIO]:
    """Opens an output of the job as a file object (downloaded to a spooled temporary file first)."""

    def open_output(out: dict[str, Any]) -> BinaryIO:
        buffer = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115 - the caller closes it
        mm.download(job_id, out["name"], buffer)  # type: ignore[arg-type]
        buffer.seek(0)
        return buffer  # type: ignore[return-value]

    return open_output


def follow(mm: Client, job_id: int, job_code: str, *, quiet: bool) -> None:
    """Draw the job's bar and one per step, as local mode does, from the job's event stream until it ends."""

    progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                        TextColumn("{task.fields[shown]}", markup=False), TimeElapsedColumn(),
                        console=err_console, disable=quiet)
    state = _Bars(progress, bar_fields, job_code)
    with progress:
        for event in mm.events(job_id):
            state.draw(event)


class _Bars:
    """The bars of one job: the job's own and one per step, fed by its events."""

    def __init__(self, progress: Progress, bar_fields: Callable[[str, float | None], dict[str, Any]],
                 job_code: str) -> None:
        self.progress, self.bar_fields, self.job_code = progress, bar_fields, job_code
        self.steps: dict[str, tuple[TaskID, str, float]] = {}
        self.status, self.percent = "queued", 0.0
        self.overall = progress.add_task(f"{job_code} [queued]", total=100, shown="")

    def draw(self, event: m.Event) -> None:
        step = event.step
        if isinstance(event, m.ProgressEvent):
            self.percent = event.percent
            if step:
                self._step(step, None, event.step_percent)
        elif isinstance(event, m.StepEvent) and step:
            self._step(step, event.status, None)
        elif isinstance(event, m.StatusEvent):
            self.status = event.status
        self.progress.update(self.overall, description=f"{self.job_code} [{self.status}]",
                             **self.bar_fields(self.status, self.percent))

    def _step(self, name: str, status: str | None, percent: float | None) -> None:
        if name not in self.steps:
            self.steps[name] = (self.progress.add_task(f"  {name}", total=100, shown=""), "running", 0.0)
        task, old_status, old_percent = self.steps[name]
        status, percent = status or old_status, old_percent if percent is None else percent
        self.steps[name] = (task, status, percent)
        self.progress.update(task, description=f"  {name} [{status}]", **self.bar_fields(status, percent))
