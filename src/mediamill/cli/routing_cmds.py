"""`mediamill routes …` (routing rules: list, add, remove, explain) and `mediamill route JOB WORKFLOW`
(the review queue's way out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mediamill.cli.context import open_runtime
from mediamill.cli.output import console, handle_errors, print_json, print_table
from mediamill.engine import review
from mediamill.engine.routing import RoutingFacts, decide, validate_rule
from mediamill.errors import InvalidInput
from mediamill.media.sniff import sniff_file
from mediamill.store import routing_repo

app = typer.Typer(help="Routing rules: where a job submitted without --workflow goes.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="print JSON")
TENANT = typer.Option("default", "--tenant", help="the tenant whose rules these are")


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{flag} must look like KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


@app.command("list")
@handle_errors
def list_cmd(tenant: str = TENANT, json_: bool = JSON) -> None:
    """List the rules in the order they are evaluated."""
    with open_runtime().engine.connect() as conn:
        rules = routing_repo.list_rules(conn, tenant)
    if json_:
        print_json(rules)
    else:
        print_table(rules, ["id", "position", "name", "condition", "workflow", "version", "enabled"],
                    title="routing rules (first match wins)")


@app.command("add")
@handle_errors
def add(name: str = typer.Option(..., "--name", help="a name shown on the jobs it routes"),
        condition: str = typer.Option(..., "--condition", "-c", help="CEL over input and job, e.g. "
                                      "input.mime.startsWith('image/')"),
        workflow: str = typer.Option(..., "--workflow", "-w", help="the workflow code it routes to"),
        version: int | None = typer.Option(None, "--version", help="pin a version"),
        position: int | None = typer.Option(None, "--position", help="lower is evaluated first (default: last)"),
        disabled: bool = typer.Option(False, "--disabled", help="save it without using it yet"),
        tenant: str = TENANT, json_: bool = JSON) -> None:
    """Add a rule; the condition is type-checked first."""
    values = {"name": name, "condition": condition, "workflow": workflow, "version": version,
              "position": position, "enabled": not disabled}
    rt = open_runtime()
    with rt.engine.begin() as conn:
        validate_rule(conn, tenant, values)
        rule = routing_repo.create_rule(conn, tenant, values, by="cli")
    if json_:
        print_json(rule)
    else:
        console.print(f"rule {rule['id']} {rule['name']!r}: {rule['condition']} → {rule['workflow']} "
                      f"(position {rule['position']})", highlight=False, markup=False, soft_wrap=True)


@app.command("remove")
@handle_errors
def remove(rule: str = typer.Argument(..., help="the rule's id or name"), tenant: str = TENANT) -> None:
    """Remove a rule."""
    with open_runtime().engine.begin() as conn:
        found = routing_repo.find_rule(conn, tenant, rule)
        routing_repo.delete_rule(conn, found["id"], tenant)
    console.print(f"rule {found['id']} {found['name']!r} removed", highlight=False, markup=False, soft_wrap=True)


@app.command("explain")
@handle_errors
def explain(file: Path = typer.Argument(..., help="a media file (its type is sniffed from its bytes)"),
            metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE job metadata (repeatable)"),
            tenant: str = TENANT, json_: bool = JSON) -> None:
    """Show where submitting FILE without --workflow would go, and why."""
    engine = open_runtime().engine
    if not file.is_file():
        raise InvalidInput(f"no such file: {file}")
    facts = RoutingFacts(mime=sniff_file(file), size=file.stat().st_size, filename=file.name,
                         metadata=_pairs(metadata, "--metadata"), submitter="cli")
    with engine.connect() as conn:
        decision = decide(conn, tenant_id=tenant, facts=facts)
    if json_:
        print_json({**decision.event(), "mime": facts.mime})
        return
    console.print(f"{file.name} ({facts.mime}) → {decision.workflow} [{decision.decision}]", highlight=False,
                  markup=False)
    console.print(f"  {decision.reason}", highlight=False, markup=False, soft_wrap=True)
    for e in decision.evaluated:
        result = e.get("error") or e.get("skipped") or e["result"]
        console.print(f"  {e['rule']}: {e['condition']} → {result}", highlight=False, markup=False, soft_wrap=True)


@handle_errors
def route(job_id: int = typer.Argument(..., help="a job waiting in review"),
          workflow: str = typer.Argument(..., help="the workflow to run it"),
          version: int | None = typer.Option(None, "--version", help="a version other than the current one"),
          json_: bool = JSON) -> None:
    """Route a job waiting in review to WORKFLOW (same id, same input)."""
    out = review.route_job(open_runtime().engine, job_id, workflow, version=version, by="cli")
    if json_:
        print_json(out)
    else:
        console.print(f"job {job_id}: queued on {workflow} v{out['workflow_version']} (queue {out['queue']})",
                      highlight=False)


def register(root: typer.Typer) -> None:
    """Add `routes` and `route` to the root command."""
    root.add_typer(app, name="routes")
    root.command("route")(route)
