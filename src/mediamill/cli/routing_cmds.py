"""`mediamill routes …` (routing rules: list, add, remove, explain) and `mediamill route JOB WORKFLOW`
(the review queue's way out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from mediamill.cli import remote
from mediamill.cli.context import open_runtime
from mediamill.cli.output import console, handle_errors, print_json, print_table
from mediamill.engine import review
from mediamill.engine.routing import RoutingFacts, decide, validate_rule
from mediamill.errors import InvalidInput, NotFound
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
    mm = remote.client()
    if mm is not None:  # the API key's tenant's rules
        rules = mm.routes.list()
    else:
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
    mm = remote.client()
    if mm is not None:
        rule = mm.routes.create(name, condition, workflow, version=version, position=position, enabled=not disabled)
    else:
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
    mm = remote.client()
    if mm is not None:
        found = _remote_rule(mm, rule)
        mm.routes.delete(found["id"])
    else:
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
    mm = remote.client()
    engine = open_runtime().engine if mm is None else None  # local mode: the database is the first question, as before
    if not file.is_file():
        raise InvalidInput(f"no such file: {file}")
    facts = RoutingFacts(mime=sniff_file(file), size=file.stat().st_size, filename=file.name,
                         metadata=_pairs(metadata, "--metadata"), submitter="cli")
    if mm is not None:  # the server decides with its rules; the type is sniffed here, from the bytes
        out = mm.routes.explain(filename=facts.filename, mime=facts.mime, size=facts.size, metadata=facts.metadata)
    else:
        assert engine is not None
        with engine.connect() as conn:
            out = {**decide(conn, tenant_id=tenant, facts=facts).event(), "mime": facts.mime}
    if json_:
        print_json(out)
        return
    console.print(f"{file.name} ({facts.mime}) → {out['workflow']} [{out['decision']}]", highlight=False,
                  markup=False)
    console.print(f"  {out['reason']}", highlight=False, markup=False, soft_wrap=True)
    for e in out["evaluated"]:
        result = e.get("error") or e.get("skipped") or e["result"]
        console.print(f"  {e['rule']}: {e['condition']} → {result}", highlight=False, markup=False, soft_wrap=True)


@handle_errors
def route(job_id: int = typer.Argument(..., help="a job waiting in review"),
          workflow: str = typer.Argument(..., help="the workflow to run it"),
          version: int | None = typer.Option(None, "--version", help="a version other than the current one"),
          json_: bool = JSON) -> None:
    """Route a job waiting in review to WORKFLOW (same id, same input)."""
    mm = remote.client()
    out = mm.route(job_id, workflow, version) if mm is not None \
        else review.route_job(open_runtime().engine, job_id, workflow, version=version, by="cli")
    if json_:
        print_json(out)
    else:
        console.print(f"job {job_id}: queued on {workflow} v{out['workflow_version']} (queue {out['queue']})",
                      highlight=False)


def _remote_rule(mm: Any, ref: str) -> dict[str, Any]:
    """A rule of the server by id or name (the same message as local mode when there is none)."""
    for rule in mm.routes.list():
        if (ref.isdigit() and rule["id"] == int(ref)) or rule["name"] == ref:
            return dict(rule)
    raise NotFound(f"no routing rule {ref!r}")


def register(root: typer.Typer) -> None:
    """Add `routes` and `route` to the root command."""
    root.add_typer(app, name="routes")
    root.command("route")(route)
