"""`mediamill reprocess` (re-run the missing parts of finished jobs), `mediamill rollout …` (canary) and
`mediamill shadow …` (shadow runs and their comparison report). They act on the database directly, as
the other engine commands do."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from mediamill.cli import remote
from mediamill.cli.context import open_runtime
from mediamill.cli.output import console, handle_errors, print_json, print_table
from mediamill.engine import reprocess as rp
from mediamill.engine import rollouts, shadow
from mediamill.errors import InvalidInput

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
    mm = remote.client()
    if mm is not None:
        _reprocess_remote(mm, job_id, steps=steps, version=version, all_=all_, workflow=workflow, status=status,
                          step=step, since=since, dry_run=dry_run, json_=json_)
        return
    engine = open_runtime().engine
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
    _print_bulk(result, dry_run=dry_run, json_=json_)


def _print_bulk(result: dict[str, Any], *, dry_run: bool, json_: bool) -> None:
    if json_:
        print_json(result)
    elif dry_run:
        console.print(f"{result['count']} jobs would be reprocessed", highlight=False)
    else:
        console.print(f"{result['count']} jobs re-queued ({result['skipped']} had nothing to re-run)", highlight=False)


def _reprocess_remote(mm: Any, job_id: int | None, *, steps: str, version: int | None, all_: bool,
                      workflow: str | None, status: list[str], step: str | None, since: str | None, dry_run: bool,
                      json_: bool) -> None:
    """`reprocess` through the API (the same checks and output as local mode)."""
    if job_id is not None and all_:
        raise InvalidInput("give a job id or --all, not both")
    if job_id is not None:
        out = mm.reprocess(job_id, steps=steps, version=version)
        if json_:
            print_json(out)
        else:
            console.print(f"job {job_id}: queued as run {out['run_number']} re-running {', '.join(out['steps'])}",
                          highlight=False, markup=False)
        return
    if not all_:
        raise InvalidInput("give a job id, or --all with filters (--workflow, --status, --step, --since)")
    _since(since)  # the same message for a bad time as local mode
    result = mm.reprocess_many(workflow=workflow, status=list(status), step=step, since=since, steps=steps,
                               version=version, dry_run=dry_run)
    _print_bulk(result, dry_run=dry_run, json_=json_)


rollout_app = typer.Typer(help="Staged rollouts: send a share of new jobs to a candidate version.",
                          no_args_is_help=True)
shadow_app = typer.Typer(help="Shadow runs: also run a share of new jobs on a candidate, invisibly; compare.",
                         no_args_is_help=True)
TENANT = typer.Option("default", "--tenant", help="whose new jobs")


def _print_status(out: dict[str, Any], json_: bool) -> None:
    if json_:
        print_json(out)
        return
    r = out["rollout"]
    if r is None:
        console.print(f"{out['workflow']}: none (active version {out['active_version']})", highlight=False)
        return
    console.print(f"{out['workflow']}: {r['kind']} of v{r['version']} at {r['percent']:g} % — {r['state']}"
                  + (f" ({r['end_reason']})" if r["end_reason"] else ""), highlight=False, markup=False)
    rows = [{"version": v, **{k: f.get(k) for k in ("jobs", "finished", "failed", "failure_rate", "p50_seconds",
                                                    "p95_seconds")}} for v, f in out["figures"].items()]
    if rows:
        print_table(rows, ["version", "jobs", "finished", "failed", "failure_rate", "p50_seconds", "p95_seconds"])


@rollout_app.command("start")
@handle_errors
def rollout_start(code: str, version: int = typer.Option(..., "--version", help="the candidate"),
                  percent: float = typer.Option(..., "--percent", help="share of new jobs, 0-100"),
                  guard_delta: float | None = typer.Option(None, "--guard-delta",
                                                           help="abort when the candidate fails this much more "
                                                                "(0.1 = ten points)"),
                  guard_min_jobs: int = typer.Option(20, "--guard-min-jobs", help="…once it has this many jobs"),
                  tenant: str = TENANT, json_: bool = JSON) -> None:
    """Send PERCENT of new jobs of CODE to VERSION (again: change the share)."""
    guard = {"max_failure_delta": guard_delta, "min_jobs": guard_min_jobs} if guard_delta is not None else None
    mm = remote.client()
    if mm is not None:  # the API key's tenant
        out = mm.rollouts.start(code, version, percent, max_failure_delta=guard_delta, min_jobs=guard_min_jobs)
    else:
        out = rollouts.start(open_runtime().engine, code, kind="canary", version=version, percent=percent,
                             tenant_id=tenant, by="cli", guard=guard)
    if json_:
        print_json(out)
    else:
        console.print(f"{code}: v{version} gets {percent:g} % of new jobs", highlight=False)


@rollout_app.command("status")
@handle_errors
def rollout_status(code: str, tenant: str = TENANT, json_: bool = JSON) -> None:
    """The rollout and its live figures per version."""
    mm = remote.client()
    _print_status(mm.rollouts.status(code) if mm is not None
                  else rollouts.status(open_runtime().engine, code, kind="canary", tenant_id=tenant), json_)


@rollout_app.command("promote")
@handle_errors
def rollout_promote(code: str, tenant: str = TENANT) -> None:
    """Activate the candidate for every new job."""
    mm = remote.client()
    out = mm.rollouts.promote(code) if mm is not None \
        else rollouts.promote(open_runtime().engine, code, kind="canary", tenant_id=tenant, by="cli")
    console.print(f"{code}: v{out['version']} is active", highlight=False)


@rollout_app.command("abort")
@handle_errors
def rollout_abort(code: str, tenant: str = TENANT) -> None:
    """Stop sending new jobs to the candidate."""
    mm = remote.client()
    if mm is not None:
        mm.rollouts.abort(code)
    else:
        rollouts.stop(open_runtime().engine, code, kind="canary", tenant_id=tenant, by="cli",
                      reason="aborted by request")
    console.print(f"{code}: rollout aborted", highlight=False)


@shadow_app.command("start")
@handle_errors
def shadow_start(code: str, version: int = typer.Option(..., "--version", help="the candidate"),
                 percent: float = typer.Option(..., "--percent", help="share of new jobs also run on it, 0-100"),
                 tenant: str = TENANT) -> None:
    """Also run PERCENT of new jobs of CODE on VERSION as shadow jobs."""
    mm = remote.client()
    if mm is not None:
        mm.shadows.start(code, version, percent)
    else:
        rollouts.start(open_runtime().engine, code, kind="shadow", version=version, percent=percent,
                       tenant_id=tenant, by="cli")
    console.print(f"{code}: shadowing {percent:g} % of new jobs on v{version}", highlight=False)


@shadow_app.command("stop")
@handle_errors
def shadow_stop(code: str, tenant: str = TENANT) -> None:
    """Stop creating shadow jobs."""
    mm = remote.client()
    if mm is not None:
        mm.shadows.stop(code)
    else:
        rollouts.stop(open_runtime().engine, code, kind="shadow", tenant_id=tenant, by="cli")
    console.print(f"{code}: shadow run stopped", highlight=False)


@shadow_app.command("promote")
@handle_errors
def shadow_promote(code: str, tenant: str = TENANT) -> None:
    """Activate the shadowed candidate."""
    mm = remote.client()
    out = mm.shadows.promote(code) if mm is not None \
        else rollouts.promote(open_runtime().engine, code, kind="shadow", tenant_id=tenant, by="cli")
    console.print(f"{code}: v{out['version']} is active", highlight=False)


@shadow_app.command("report")
@handle_errors
def shadow_report(code: str, version: int | None = typer.Option(None, "--version"),
                  tenant: str = TENANT, json_: bool = JSON) -> None:
    """Compare the active version with the shadowed candidate over the shadowed jobs."""
    mm = remote.client()
    if mm is not None:
        out = mm.shadows.report(code, version)
    else:
        rt = open_runtime()
        out = shadow.report(rt.engine, rt.storage, code, tenant_id=tenant, version=version)
    if json_:
        print_json(out)
        return
    rows = [{"side": side, **{k: v.get(k) for k in ("versions", "jobs", "failed", "failures_by_class",
                                                   "p50_seconds", "p95_seconds")}}
            for side, v in out["versions"].items()]
    print_table(rows, ["side", "versions", "jobs", "failed", "failures_by_class", "p50_seconds", "p95_seconds"],
                title=f"{code}: {out['pairs_total']} shadowed jobs")
    diffs = [{"primary job": p["primary"]["id"], "step": o["step"], "primary": (o["primary"] or {}).get("name"),
              "candidate": (o["candidate"] or {}).get("name"), "difference": _summary(o.get("difference"))}
             for p in out["pairs"] for o in p["outputs"]]
    print_table(diffs, ["primary job", "step", "primary", "candidate", "difference"], title="outputs")


def _summary(diff: dict[str, Any] | None) -> str:
    if not diff:
        return "—"
    if diff["kind"] == "image":
        p, c = diff["primary"], diff["candidate"]
        return f"{p['width']}×{p['height']} → {c['width']}×{c['height']}, hash {diff['hash_distance']}, " \
               f"SSIM {diff['ssim']}"
    if diff["kind"] == "av":
        return f"duration {diff['duration_delta']:+}s, same resolution: {diff['same_resolution']}"
    if diff["kind"] == "text":
        return f"similarity {diff['similarity']}"
    return ", ".join(f"{k}={v}" for k, v in diff.items() if k != "kind")


def register(root: typer.Typer) -> None:
    """Add `reprocess`, `rollout` and `shadow` to the root command."""
    root.command("reprocess")(reprocess)
    root.add_typer(rollout_app, name="rollout")
    root.add_typer(shadow_app, name="shadow")
