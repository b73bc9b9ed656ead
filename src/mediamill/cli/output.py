"""Terminal output: Rich tables on a terminal, JSON with --json; errors without tracebacks."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mediamill.errors import MediamillError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


#: columns that name things: shown whole, never folded or cut (``WF-VIDE…`` names two workflows)
KEY_COLUMNS = frozenset({"id", "name", "action", "code", "step_name", "queue_name", "prefix", "storage_key", "tool"})
#: below this, a folded column is no longer readable; the table grows wider than the terminal instead
FOLD_MIN_WIDTH = 8


def is_key_column(name: str) -> bool:
    return name in KEY_COLUMNS or name.endswith(("_id", "_code"))


def _cell(value: Any) -> str:
    return "" if value is None else str(_default(value)) if isinstance(value, datetime) else str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Iterable[str], *, title: str | None = None,
                keys: Iterable[str] = ()) -> None:
    """A table that never cuts a value: ids and codes (and ``keys``) stay whole on one line, other
    columns fold; when even that does not fit, the table is printed wider than the terminal."""
    cols = list(columns)
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    whole = set(keys) | {c for c in cols if is_key_column(c)}
    table = Table(title=title, header_style="bold")
    minimum = natural = 1  # the outer border; each column adds its padding and one border
    for i, c in enumerate(cols):
        longest = max([len(c), *(len(row[i]) for row in cells)])
        width = longest if c in whole else min(longest, max(FOLD_MIN_WIDTH, min(len(c), 12)))
        table.add_column(c, no_wrap=c in whole, overflow="fold", min_width=width)
        minimum, natural = minimum + width + 3, natural + longest + 3
    for row in cells:
        table.add_row(*(Text(v) for v in row))  # Text: a value like "[failed]" is not Rich markup
    if minimum <= console.width:
        console.print(table)
        return
    # too narrow even folded: print the table whole, wider than the terminal, rather than cut it
    Console(file=console.file, width=natural, height=console.height, force_terminal=console.is_terminal,
            no_color=console.no_color).print(table)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def exit_code(error_class: str | None) -> int:
    """2 for a bad workflow document or configuration, 1 for every other failure."""
    return 2 if error_class in ("invalid_workflow", "config") else 1


def handle_errors(fn: F) -> F:
    """Turn mediamill errors into a message and a non-zero exit, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MediamillError as exc:
            err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
            raise typer.Exit(exit_code(exc.error_class)) from None
        except Exception as exc:
            client_errors = sys.modules.get("mediamill.client.errors")  # loaded only in remote mode
            if client_errors is None or not isinstance(exc, client_errors.MediamillClientError):
                raise
            # remote mode: the server's problem, with local mode's message and exit code
            api_error = isinstance(exc, client_errors.APIError)
            err_console.print(f"[red]error:[/red] {exc.message if api_error else exc}", highlight=False)
            raise typer.Exit(exit_code(exc.error_class if api_error else None)) from None

    return wrapper  # type: ignore[return-value]
