"""`mediamill workflows …`: list, show, apply, validate, diff, activate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mediamill.cli import remote
from mediamill.cli.context import open_runtime
from mediamill.cli.output import console, err_console, handle_errors, print_json, print_table
from mediamill.engine.routing import ambiguity_warnings
from mediamill.errors import WorkflowInvalid
from mediamill.store import workflow_repo
from mediamill.workflows.loader import dump_yaml, load_workflow_file, validate_document, workflow_files
from mediamill.workflows.models import WorkflowDef

app = typer.Typer(help="Workflow definitions and their versions.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="print JSON")
#: what the server said about each valid file (remote mode): code and number of steps
console_checks: dict[Path, tuple[str, int]] = {}


@app.command("list")
@handle_errors
def list_cmd(json_: bool = JSON) -> None:
    """List workflows with their current version."""
    mm = remote.client()
    if mm is not None:
        items = [w.to_dict() for w in mm.workflows.list()]
        if json_:
            print_json(items)
        else:  # the API's names, shown under local mode's columns
            print_table([{"workflow_code": w["code"], "workflow_name": w["name"], "workflow_type": w["type"],
                          "queue_name": w["queue"], "current_version": w["current_version"],
                          "versions": w["versions"], "is_active": w["active"]} for w in items],
                        ["workflow_code", "workflow_name", "workflow_type", "queue_name", "current_version",
                         "versions", "is_active"])
        return
    rt = open_runtime()
    with rt.engine.connect() as conn:
        rows = workflow_repo.list_workflows(conn)
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["workflow_code", "workflow_name", "workflow_type", "queue_name",
                           "current_version", "versions", "is_active"])


@app.command()
@handle_errors
def show(code: str, version: int | None = typer.Option(None, "--version", "-v"), json_: bool = JSON) -> None:
    """Show a workflow's definition (current version, or --version N)."""
    mm = remote.client()
    if mm is not None:
        got_remote = mm.workflows.get(code, version)
        shown, current = got_remote.version, got_remote.current_version
        definition = got_remote.definition
        wf_def = validate_document(definition)
        versions: list[dict[str, Any]] = [v.to_dict() for v in mm.workflows.versions(code)]
    else:
        rt = open_runtime()
        with rt.engine.connect() as conn:
            got = workflow_repo.get_workflow(conn, code, version)
            versions = workflow_repo.list_versions(conn, code)
        shown, current = got.version, got.current_version
        definition = got.definition.model_dump(mode="json", exclude_none=True)
        wf_def = got.definition
    if json_:
        print_json({"code": code, "version": shown, "current_version": current, "definition": definition,
                    "versions": versions})
        return
    console.print(f"[bold]{code}[/bold] version {shown} (current: {current})")
    console.print(dump_yaml(wf_def), highlight=False, markup=False)


def _validate_all(path: Path) -> list[tuple[Path, WorkflowDef | None]]:
    """Every workflow file under ``path``, validated (by the server in remote mode); exit 2 on problems."""
    files = workflow_files(path)
    if not files:
        raise WorkflowInvalid(["no .yaml/.yml/.json files found"], source=str(path))
    parsed: list[tuple[Path, WorkflowDef | None]] = []
    problems: list[str] = []
    mm = remote.client()
    for f in files:
        if mm is not None:
            result = mm.workflows.validate(f)
            if result.valid:
                parsed.append((f, None))
                console_checks[f] = (result.code or "", result.steps or 0)
            else:
                problems.extend(f"{f}: {p}" for p in result.problems)
            continue
        try:
            parsed.append((f, load_workflow_file(f)))
        except WorkflowInvalid as exc:
            problems.extend(f"{exc.source}: {p}" for p in exc.problems)
    if problems:
        for p in problems:
            err_console.print(f"[red]✗[/red] {p}", highlight=False, markup=True)
        raise typer.Exit(2)
    return parsed


@app.command()
@handle_errors
def validate(file: Path = typer.Option(..., "-f", "--file", help="a workflow file or a folder")) -> None:
    """Validate workflow files without saving them."""
    for f, wf in _validate_all(file):
        code, steps = (wf.code, len(wf.steps)) if wf is not None else console_checks[f]
        console.print(f"[green]✓[/green] {f}: {code} ({steps} steps)", highlight=False)


@app.command()
@handle_errors
def apply(file: Path = typer.Option(..., "-f", "--file", help="a workflow file or a folder"),
          author: str = typer.Option("cli", help="recorded as the version's author"),
          json_: bool = JSON) -> None:
    """Save each file as a new version and activate it (identical content is not a new version)."""
    parsed = _validate_all(file)
    results: list[dict[str, Any]] = []
    mm = remote.client()
    if mm is not None:  # the server records the key's name as the author
        for f, _wf in parsed:
            saved_remote = mm.workflows.apply(f)
            results.append({"file": str(f), "code": saved_remote.code, "version": saved_remote.version,
                            "created": saved_remote.created, "warnings": saved_remote.warnings})
    else:
        rt = open_runtime()
        rt.migrate()
        with rt.engine.begin() as conn:
            for f, wf in parsed:
                assert wf is not None
                saved = workflow_repo.save_version(conn, wf, source=f.read_text(), author=author)
                results.append({"file": str(f), "code": saved.code, "version": saved.version,
                                "created": saved.created})
            for r in results:
                r["warnings"] = ambiguity_warnings(conn, r["code"], None)
    if json_:
        print_json(results)
        return
    for r in results:
        state = "created version" if r["created"] else "unchanged, version"
        console.print(f"{r['code']}: {state} {r['version']} (active)", highlight=False)
        for warning in r["warnings"]:
            err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def diff(code: str, v1: int, v2: int, json_: bool = JSON) -> None:
    """Show what changed between two versions."""
    mm = remote.client()
    if mm is not None:
        result = mm.workflows.diff(code, v1, v2).to_dict()
    else:
        rt = open_runtime()
        with rt.engine.connect() as conn:
            result = workflow_repo.diff_versions(conn, code, v1, v2)
    if json_:
        print_json(result)
        return
    for key in ("steps_added", "steps_removed", "steps_changed"):
        if result[key]:
            console.print(f"{key.replace('_', ' ')}: {', '.join(result[key])}", highlight=False)
    console.print(result["diff"] or "(no differences)", highlight=False, markup=False)


@app.command()
@handle_errors
def activate(code: str, version: int) -> None:
    """Make VERSION the one new jobs run (an older version = rollback)."""
    mm = remote.client()
    if mm is not None:
        mm.workflows.activate(code, version)
    else:
        rt = open_runtime()
        with rt.engine.begin() as conn:
            workflow_repo.activate_version(conn, code, version)
    console.print(f"{code}: version {version} is active", highlight=False)
