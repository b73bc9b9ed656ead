"""Engine commands: submit, worker, jobs, job, cancel, retry, priority, queues, dlq, breakers, workers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mediamill.cli import observe, remote
from mediamill.cli.context import open_runtime
from mediamill.cli.jobview import (
    bar_fields,
    explain_review,
    finish_submit,
    outcome_line,
    print_submitted,
    step_bar,
    warn_no_worker,
)
from mediamill.cli.output import console, err_console, handle_errors, print_json, print_table
from mediamill.config import parse_pools
from mediamill.engine import operations as ops
from mediamill.engine.outputs import find_job_id, save_outputs
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.errors import InvalidInput, NotFound
from mediamill.runtime import Runtime, freeze_startup_heap
from mediamill.statuses import TERMINAL_JOB

JSON = typer.Option(False, "--json", help="print JSON")


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--param must look like KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def submit(file: Path = typer.Argument(..., help="the media file"),
           workflow: str | None = typer.Option(None, "--workflow", "-w", help="workflow code (default: routing)"),
           priority: int | None = typer.Option(None, "--priority", "-p", help="higher runs sooner"),
           param: list[str] = typer.Option([], "--param", help="KEY=VALUE job parameter (repeatable)"),
           wait: bool = typer.Option(False, "--wait", help="follow the job until it ends"),
           json_: bool = JSON) -> None:
    """Submit a file as a job."""
    _submit(file, workflow, priority, param, wait, json_)


@handle_errors
def _submit(file: Path, workflow: str | None, priority: int | None, param: list[str], wait: bool,
            json_: bool) -> None:
    mm = remote.client()
    if mm is not None:
        from mediamill.cli.remote_submit import submit_remote

        submit_remote(mm, file, workflow=workflow, priority=priority, params=_params(param), wait=wait,
                      json_=json_)
        return
    rt = open_runtime()
    rt.prepare()
    params = _params(param)
    inp = store_input_file(rt.storage, file)
    try:
        job = submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code=workflow, priority=priority,
                                                  params=params, submitted_by="cli"))
    except BaseException:
        if inp.storage_key:  # a refused job leaves nothing behind
            rt.storage.delete(inp.storage_key)
        raise
    if job.status == "pending" and job.routing:  # in review: a person routes it, no worker will
        explain_review(job.id, job.routing, waiting=wait and not json_)
        if wait:
            raise typer.Exit(1)
    else:
        _warn_without_worker(rt, job.queue_name)
    if not wait:
        if json_:
            print_json(job.as_dict())
        else:
            print_submitted(job.as_dict())
        return
    detail = _follow(rt, job.id, quiet=json_)
    finish_submit(job.as_dict(), detail, json_)


def _warn_without_worker(rt: Runtime, queue: str) -> None:
    """A job nobody will run should not look like a job that is merely waiting."""
    if not ops.live_workers_serving(rt.engine, queue, lease_seconds=rt.settings.lease_seconds):
        warn_no_worker(queue)


def _follow(rt: Runtime, job_id: int, *, quiet: bool) -> dict[str, Any]:
    """Poll the job and draw a progress bar per step until it ends."""
    # markup=False: "[completed]" in a label is text, not a Rich style tag that swallows it
    progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                        TextColumn("{task.fields[shown]}", markup=False), TimeElapsedColumn(),
                        console=err_console, disable=quiet)
    bars: dict[str, Any] = {}
    with progress:
        overall = progress.add_task("job", total=100, shown="")
        while True:
            detail = ops.get_job(rt.engine, job_id)
            for s in detail["steps"]:  # executions in order: a step's latest run wins
                if s["step_name"] not in bars:
                    bars[s["step_name"]] = progress.add_task(f"  {s['step_name']}", total=100, shown="")
                progress.update(bars[s["step_name"]], **step_bar(s))
            progress.update(overall, description=f"{detail['job_code']} [{detail['status']}]",
                            **bar_fields(detail["status"], detail["progress_percent"]))
            if detail["status"] in TERMINAL_JOB:
                return detail
            time.sleep(0.25)


def worker(pool: list[str] = typer.Option([], "--pool", help="QUEUE=N concurrency (repeatable); default *=2"),
           name: str | None = typer.Option(None, "--name", help="a name for this worker"),
           migrate: bool = typer.Option(True, help="apply migrations first (--no-migrate: a migrate job owns "
                                                   "the schema; refuse to start unless it is at this version's)"),
           metrics_port: int | None = observe.metrics_port_option()) -> None:
    """Run a worker until SIGTERM (drains gracefully)."""
    _worker(pool, name, migrate, metrics_port)


@handle_errors
def _worker(pool: list[str], name: str | None, migrate: bool, metrics_port: int | None) -> None:
    from mediamill.engine.worker import Worker
    from mediamill.observability.endpoint import worker_gauges

    rt = Runtime()
    rt.prepare(migrate=migrate)
    pools = parse_pools(pool) if pool else (rt.settings.parsed_pools() or {"*": 2})
    port = observe.resolve_port(rt, metrics_port)
    observe.isolate_metrics(rt, "worker", port)
    _setup_observability(rt, "worker")
    w = Worker(rt, pools=pools, name=name)
    endpoint = observe.start_endpoint(rt, "worker", port, worker=w.worker_id, health=w.health,
                                      gauges=worker_gauges(w))
    shown = f", metrics on {endpoint.url}/metrics" if endpoint else ""
    console.print(f"worker {w.worker_id} pools {pools}{shown}", highlight=False)
    freeze_startup_heap()
    try:
        w.run_forever()
    finally:
        if endpoint:
            endpoint.stop()


def _setup_observability(rt: Runtime, role: str) -> None:
    from mediamill.runtime import configure_observability

    configure_observability(rt, role)


def jobs(status: str | None = typer.Option(None, "--status", help="e.g. failed or queued,processing"),
         workflow: str | None = typer.Option(None, "--workflow"),
         limit: int = typer.Option(50, "--limit"), json_: bool = JSON) -> None:
    """List jobs, newest first."""
    _jobs(status, workflow, limit, json_)


@handle_errors
def _jobs(status: str | None, workflow: str | None, limit: int, json_: bool) -> None:
    mm = remote.client()
    if mm is not None:
        rows = [j.to_dict() for j in mm.jobs(status=status, workflow=workflow, limit=min(limit, 500),
                                             page_size=min(limit, 500))]
    else:
        rows = ops.list_jobs(open_runtime().engine, status=status, workflow=workflow, limit=limit)
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["id", "job_code", "workflow_code", "status", "priority", "progress_percent",
                           "submitted_at", "error_class"])


def job(job_id: int = typer.Argument(...), json_: bool = JSON) -> None:
    """Show a job: steps (status, attempts, duration, error), outputs, events."""
    _job(job_id, json_)


@handle_errors
def _job(job_id: int, json_: bool) -> None:
    mm = remote.client()
    if mm is not None:  # the API's job, without its HTTP links: the same document as local mode
        detail = {k: v for k, v in mm.job(job_id).to_dict().items() if k != "links"}
    else:
        detail = ops.get_job(open_runtime().engine, job_id)
    if json_:
        print_json(detail)
        return
    console.print(f"[bold]{detail['job_code']}[/bold] {detail['workflow_code']} v{detail['workflow_version']} "
                  f"status={detail['status']} priority={detail['priority']} progress={detail['progress_percent']}",
                  highlight=False)
    if detail.get("error_message"):
        console.print(f"error ({detail['error_class']}): {detail['error_message']}", highlight=False, markup=False)
    elif detail["status"] == "partial":
        console.print(outcome_line(detail), highlight=False, markup=False)
    print_table(detail["steps"], ["step_name", "action", "status", "retry_attempt", "duration_ms", "error_class",
                                  "error_message"], title="steps")
    if detail["outputs"]:
        print_table(detail["outputs"], ["name", "mime_type", "bytes", "step_name"], title="outputs")
    print_table([{**e, "data": json.dumps(e["data"])[:100]} for e in detail["events"][-30:]],
                ["id", "created_at", "event_type", "step_name", "data"], title="events")


def outputs(job_ref: str = typer.Argument(..., metavar="JOB", help="the job's id or code"),
            dest: Path | None = typer.Option(None, "--dest", help="folder to save into (default: ./<job code>)"),
            overwrite: bool = typer.Option(False, "--overwrite", help="replace files that differ"),
            json_: bool = JSON) -> None:
    """Download a job's outputs under their names (names with / become sub-folders)."""
    _outputs(job_ref, dest, overwrite, json_)


@handle_errors
def _outputs(job_ref: str, dest: Path | None, overwrite: bool, json_: bool) -> None:
    mm = remote.client()
    opener: Callable[[dict[str, Any]], Any]
    if mm is not None:  # a code is looked up through the jobs of the day it names
        from mediamill.cli.remote_submit import output_opener

        job_id = int(job_ref) if job_ref.isdigit() else mm.find_job(job_ref).id
        detail = mm.job(job_id).to_dict()
        opener = output_opener(mm, job_id)
    else:
        rt = open_runtime()
        detail = ops.get_job(rt.engine, find_job_id(rt.engine, job_ref))

        def opener(out: dict[str, Any]) -> Any:
            return rt.storage.open(out["storage_key"])
    published = [o for o in detail["outputs"] if o.get("visible") is not False]
    if not published:
        raise NotFound(f"job {detail['job_code']} has no outputs (it is {detail['status']})")
    folder = dest if dest is not None else Path(detail["job_code"])
    rows = save_outputs(published, folder, opener, overwrite=overwrite)
    if json_:
        print_json({"job_id": detail["id"], "job_code": detail["job_code"], "dest": str(folder), "items": rows})
        return
    print_table(rows, ["name", "bytes", "action", "path"], title=f"{detail['job_code']} outputs → {folder}",
                keys=("path",))


@handle_errors
def cancel(job_id: int = typer.Argument(...)) -> None:
    """Cancel a job (a running step is killed)."""
    mm = remote.client()
    state = mm.cancel(job_id).status if mm is not None else ops.cancel_job(open_runtime().engine, job_id, by="cli")
    console.print(f"job {job_id}: {state}")


@handle_errors
def retry(job_id: int = typer.Argument(...), version: int | None = typer.Option(None, "--version")) -> None:
    """Re-run a failed, partial or cancelled job (resumes at the failed step)."""
    mm = remote.client()
    if mm is not None:
        mm.retry(job_id, version=version)
    else:
        ops.retry_job(open_runtime().engine, job_id, version=version, by="cli")
    console.print(f"job {job_id}: queued")


@handle_errors
def priority(job_id: int = typer.Argument(...), value: int = typer.Argument(...)) -> None:
    """Change the priority of a waiting job."""
    mm = remote.client()
    if mm is not None:
        mm.set_priority(job_id, value)
    else:
        ops.change_priority(open_runtime().engine, job_id, value)
    console.print(f"job {job_id}: priority {value}")


queues_app = typer.Typer(help="Queues: depth, waiting, oldest wait; pause/resume.", invoke_without_command=True)


@queues_app.callback()
@handle_errors
def queues_list(ctx: typer.Context, json_: bool = JSON) -> None:
    """List queues."""
    if ctx.invoked_subcommand is not None:
        return
    mm = remote.client()
    rows = [q.to_dict() for q in mm.queues()] if mm is not None else ops.queue_stats(open_runtime().engine)
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["name", "depth", "waiting", "processing", "scheduled", "oldest_wait_seconds", "paused"])


@queues_app.command("pause")
@handle_errors
def queue_pause(name: str) -> None:
    """Stop workers from claiming this queue's jobs."""
    mm = remote.client()
    if mm is not None:
        mm.pause_queue(name)
    else:
        ops.pause_queue(open_runtime().engine, name)
    console.print(f"queue {name}: paused")


@queues_app.command("resume")
@handle_errors
def queue_resume(name: str) -> None:
    """Let workers claim this queue's jobs again."""
    mm = remote.client()
    if mm is not None:
        mm.resume_queue(name)
    else:
        ops.resume_queue(open_runtime().engine, name)
    console.print(f"queue {name}: resumed")


dlq_app = typer.Typer(help="Dead-letter queue.", no_args_is_help=True)


@dlq_app.command("list")
@handle_errors
def dlq_list(error_class: str | None = typer.Option(None, "--error-class"),
             workflow: str | None = typer.Option(None, "--workflow"), json_: bool = JSON) -> None:
    """Open dead letters."""
    mm = remote.client()
    if mm is not None:
        rows = [d.to_dict() for d in mm.dead_letters.list(error_class=error_class, workflow=workflow, limit=500,
                                                          page_size=500)]
    else:
        rows = ops.list_dead_letters(open_runtime().engine, error_class=error_class, workflow=workflow, limit=500)
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["id", "job_id", "job_code", "workflow_code", "failed_step", "error_class",
                           "error_message", "created_at"])


@dlq_app.command("retry")
@handle_errors
def dlq_retry(dl_id: int | None = typer.Argument(None), all_: bool = typer.Option(False, "--all"),
              error_class: str | None = typer.Option(None, "--error-class"),
              workflow: str | None = typer.Option(None, "--workflow"),
              version: int | None = typer.Option(None, "--version", help="run on this workflow version")) -> None:
    """Retry one dead letter, or all matching a filter (--all)."""
    mm = remote.client()
    if mm is not None:
        if all_:
            n = mm.dead_letters.retry_all(error_class=error_class, workflow=workflow, version=version)
            console.print(f"retried {n} dead letters")
            return
        if dl_id is None:
            raise InvalidInput("give a dead-letter ID or --all")
        job_id = mm.dead_letters.retry(dl_id, version=version)
    else:
        rt = open_runtime()
        if all_:
            n = ops.retry_dead_letters(rt.engine, error_class=error_class, workflow=workflow, version=version,
                                       by="cli")
            console.print(f"retried {n} dead letters")
            return
        if dl_id is None:
            raise InvalidInput("give a dead-letter ID or --all")
        job_id = ops.retry_dead_letter(rt.engine, dl_id, version=version, by="cli")
    console.print(f"dead letter {dl_id}: job {job_id} queued")


@dlq_app.command("discard")
@handle_errors
def dlq_discard(dl_id: int) -> None:
    """Resolve a dead letter without retrying it."""
    mm = remote.client()
    if mm is not None:
        mm.dead_letters.discard(dl_id)
    else:
        ops.discard_dead_letter(open_runtime().engine, dl_id, by="cli")
    console.print(f"dead letter {dl_id}: discarded")


breakers_app = typer.Typer(help="Circuit breakers.", invoke_without_command=True)


@breakers_app.callback()
@handle_errors
def breakers_list(ctx: typer.Context, json_: bool = JSON) -> None:
    """Circuit breakers per action."""
    if ctx.invoked_subcommand is not None:
        return
    mm = remote.client()
    rows = [b.to_dict() for b in mm.breakers()] if mm is not None else ops.list_breakers(open_runtime().engine)
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["action", "state", "failure_count", "success_count", "opened_at", "next_probe_at"])


@breakers_app.command("reset")
@handle_errors
def breaker_reset(action: str) -> None:
    """Close a breaker by hand."""
    mm = remote.client()
    if mm is not None:
        mm.reset_breaker(action)
    else:
        ops.reset_breaker(open_runtime().engine, action)
    console.print(f"breaker {action}: closed")


@handle_errors
def workers(json_: bool = JSON, all_: bool = typer.Option(False, "--all", help="include stopped workers")) -> None:
    """Live workers."""
    mm = remote.client()
    if mm is not None:
        if all_:
            raise InvalidInput("the API lists live workers only; run `workers --all` where the database is")
        rows = [w.to_dict() for w in mm.workers()]
    else:
        rt = open_runtime()
        rows = ops.list_workers(rt.engine, include_stopped=all_, lease_seconds=rt.settings.lease_seconds)
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["id", "hostname", "pid", "pools", "state", "heartbeat_at", "running_jobs", "jobs_done"])


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(worker)
    app.command()(jobs)
    app.command()(job)
    app.command()(outputs)
    app.command()(cancel)
    app.command()(retry)
    app.command()(priority)
    app.command()(workers)
    app.add_typer(queues_app, name="queues")
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(breakers_app, name="breakers")
