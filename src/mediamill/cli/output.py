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


def print_table(rows: Sequence[dict[str, Any]], columns: Iterable[str], *, title: str | None = None) -> None:
    cols = list(columns)
    table = Table(title=title, header_style="bold")
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if r.get(c) is None else str(_default(r.get(c)) if isinstance(r.get(c), datetime)
                                                         else r.get(c)) for c in cols])
    console.print(table)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn mediamill errors into a message and a non-zero exit, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MediamillError as exc:
            err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
            raise typer.Exit(2 if exc.error_class in ("invalid_workflow", "config") else 1) from None

    return wrapper  # type: ignore[return-value]
