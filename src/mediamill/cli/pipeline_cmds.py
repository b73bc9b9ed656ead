"""`mediamill reprocess` (re-run the missing parts of finished jobs), `mediamill rollout …` (canary) and
`mediamill shadow …` (shadow runs and their comparison report)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from mediamill.cli.output import console, handle_errors, print_json
from mediamill.engine import reprocess as rp
from mediamill.errors import InvalidInput
from mediamill.runtime import Runtime

JSON = typer.Option(False, "--json", help="print JSON")


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--since must be an ISO-8601 time, got {value!r}") from None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


@handle_errors
def reprocess(job_id: int | None = typer.Argument(None, help="one job (or use the filters with --all)"),
              steps: str = typer.Option("failed", "--steps", help="failed | skipped | all"),
              version: int | None = typer.Option(None, "--version", help="run on another workflow version"),
              all_: bool = typer.Option(False, "--all", help="every finished job matching the filters"),
              workflow: str | None = typer.Option(None, "--workflow", help="filter: workflow code"),
              status: list[str] = typer.Option(["partial"], "--status", help="filter: job status (repeatable)"),
              step: str | None = typer.Option(None, "--step", help="filter: jobs where this step failed/skipped"),
              since: str | None = typer.Option(None, "--since", help="filter: submitted at or after (ISO-8601)"),
              dry_run: bool = typer.Option(False, "--dry-run", help="count the jobs, change nothing"),
              json_: bool = JSON) -> None:
    """Re-run only the failed (or skipped, or all) steps of finished jobs, keeping the other outputs."""
    engine = Runtime().engine
    if job_id is not None and all_:
        raise InvalidInput("give a job id or --all, not both")
    if job_id is not None:
        out = rp.reprocess_job(engine, job_id, steps=steps, version=version, by="cli")
        if json_:
            print_json(out)
        else:
            console.print(f"job {job_id}: queued as run {out['run_number']} re-running {', '.join(out['steps'])}",
                          highlight=False, markup=False)
        return
    if not all_:
        raise InvalidInput("give a job id, or --all with filters (--workflow, --status, --step, --since)")
    sel = rp.Selection(workflow=workflow, status=tuple(status), step=step, since=_since(since))
    result = rp.reprocess_jobs(engine, sel, steps=steps, version=version, by="cli", dry_run=dry_run)
    if json_:
        print_json(result)
    elif dry_run:
        console.print(f"{result['count']} jobs would be reprocessed", highlight=False)
    else:
        console.print(f"{result['count']} jobs re-queued ({result['skipped']} had nothing to re-run)", highlight=False)


def register(root: typer.Typer) -> None:
    root.command("reprocess")(reprocess)
