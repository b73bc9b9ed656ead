"""The `mediamill` command."""

from __future__ import annotations

import typer

from mediamill import __version__
from mediamill.cli import (
    actions_cmd,
    client_cmds,
    engine_cmds,
    keys,
    notify_cmds,
    pipeline_cmds,
    remote,
    routing_cmds,
    sources_cmds,
    workflows,
)
from mediamill.cli import api as api_cli
from mediamill.cli.output import console, handle_errors
from mediamill.runtime import Runtime

app = typer.Typer(help="mediamill — a self-hosted media workflow engine.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(workflows.app, name="workflows")
engine_cmds.register(app)
app.add_typer(keys.app, name="keys")
app.command("api")(api_cli.api)
app.command("actions")(actions_cmd.actions)
notify_cmds.register(app)
routing_cmds.register(app)
pipeline_cmds.register(app)
sources_cmds.register(app)
client_cmds.register(app)


def _print_version(value: bool) -> None:
    # eager: answers before Typer looks for a command (which would say "Missing command.")
    if value:
        console.print(f"mediamill {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="print the version and exit", is_eager=True,
                                       callback=_print_version),
          url: str | None = typer.Option(None, "--url", envvar="MEDIAMILL_URL",
                                         help="a mediamill server: commands go through its API (remote mode)"),
          api_key: str | None = typer.Option(None, "--api-key", envvar="MEDIAMILL_API_KEY",
                                             help="the API key for --url"),
          local: bool = typer.Option(False, "--local", help="use the local database even when a server is set")
          ) -> None:
    """mediamill — a self-hosted media workflow engine."""
    remote.configure(url=url, api_key=api_key, local=local)


@db_app.command("upgrade")
@handle_errors
def db_upgrade() -> None:
    """Apply the schema migrations."""
    rt = Runtime()
    rt.migrate()
    console.print("database is at the latest schema")


@app.command()
@handle_errors
def doctor(json_: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Show the media tools in use (ffmpeg and where it comes from, libvips, pdfium, models, LibreOffice)."""
    from mediamill.cli.output import print_json, print_table
    from mediamill.media.tools import doctor_report

    report = doctor_report()
    if json_:
        print_json(report)
        return
    rows = [{"tool": name, "available": info.get("available"),
             "detail": ", ".join(f"{k}={v}" for k, v in info.items() if k != "available" and v is not None)}
            for name, info in report.items()]
    print_table(rows, ["tool", "available", "detail"], title="mediamill doctor")


@app.command()
@handle_errors
def serve(host: str | None = typer.Option(None, help="bind address (default 127.0.0.1)"),
          port: int | None = typer.Option(None, help="port (default 8000)")) -> None:
    """Run API, dashboard, workers and sources in one process (SQLite + local storage by default)."""
    from mediamill.cli.serve import run_serve

    run_serve(host=host, port=port)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
