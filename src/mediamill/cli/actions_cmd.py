"""`mediamill actions`: what a workflow step can do, and the parameters each action takes."""

from __future__ import annotations

from typing import Any

import typer

from mediamill.actions.base import load_actions, unknown_action_message
from mediamill.actions.catalog import describe_actions
from mediamill.cli import remote
from mediamill.cli.output import console, handle_errors, print_json, print_table
from mediamill.errors import NotFound


@handle_errors
def actions(name: str | None = typer.Argument(None, help="show this action's parameters in full"),
            family: str | None = typer.Option(None, "--family", help="only this family (video, image, …)"),
            json_: bool = typer.Option(False, "--json", help="print JSON: {\"items\": [...]}")) -> None:
    """List every registered action (built-in and plug-in) with its parameters and error classes."""
    mm = remote.client()
    if mm is not None:  # the server's actions (its plug-ins), not this machine's
        items = [mm.action(name).to_dict()] if name is not None else [a.to_dict() for a in mm.actions(family)]
        if name is not None and family is not None:
            items = [a for a in items if a["family"] == family]
    else:
        items = describe_actions(family=family)
        if name is not None:
            items = [a for a in items if a["name"] == name]
    if name is not None and not items:
        raise NotFound(unknown_action_message(name, load_actions()))
    if json_:
        print_json({"items": items})
    elif name is not None:
        _print_one(items[0])
    else:
        print_table([_summary(a) for a in items], ["name", "family", "params", "errors", "isolated", "idempotent"],
                    title="actions", keys=("name",))


def _summary(action: dict[str, Any]) -> dict[str, Any]:
    return {**action, "params": ", ".join(p["name"] for p in action["params"]) or "-",
            "errors": ", ".join(action["errors"]) or "-"}


def _print_one(action: dict[str, Any]) -> None:
    origin = action["plugin"]["package"] if action["plugin"] else "built in"
    console.print(f"[bold]{action['name']}[/bold] ({action['family']}, {origin}) — {action['description']}",
                  highlight=False)
    console.print(f"errors: {', '.join(action['errors']) or '-'}; isolated: {action['isolated']}; "
                  f"idempotent: {action['idempotent']}" + (f"; fuses as {action['fuse']}" if action["fuse"] else ""),
                  highlight=False, markup=False)
    rows = [{**p, "default": _shown(p["default"]) if not p["required"] else "(required)",
             "allowed": ", ".join(map(str, p["allowed"])) if p["allowed"] else ""} for p in action["params"]]
    print_table(rows, ["name", "type", "default", "allowed", "bounds", "description"], title="parameters",
                keys=("name",))


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)
