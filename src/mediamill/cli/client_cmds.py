"""`mediamill login URL` and `mediamill completion SHELL`."""

from __future__ import annotations

import os

import typer

from mediamill.cli import remote
from mediamill.cli.output import console, handle_errors

SHELLS = ("bash", "zsh", "fish", "powershell")


def register(app: typer.Typer) -> None:
    """Add these commands to the root `mediamill` app."""
    app.command("login")(login)
    app.command("completion")(completion)


@handle_errors
def login(url: str = typer.Argument(..., help="the server, e.g. https://media.example.com"),
          api_key: str | None = typer.Option(None, "--api-key", help="the key (asked for when not given)",
                                             envvar="MEDIAMILL_API_KEY", show_envvar=False),
          verify: bool = typer.Option(True, "--verify/--no-verify", help="check the key against the server")) -> None:
    """Save a server and its API key (mode 0600) so every command talks to that server."""
    from mediamill.client import Client

    key = api_key or typer.prompt("API key", hide_input=True)
    url = url.rstrip("/")
    who = ""
    if verify:
        with Client(url, key) as mm:
            me = mm.me()
        who = f" as {me.role} of tenant {me.tenant}"
    path = remote.save_login(url, key)
    console.print(f"logged in to {url}{who}; key saved to {path}", highlight=False, soft_wrap=True)


def completion(shell: str | None = typer.Argument(None, help=f"one of {', '.join(SHELLS)} (default: this shell)"),
               ) -> None:
    """Print the shell completion script: `eval "$(mediamill completion bash)"`, or save it where the shell
    loads completions (e.g. `mediamill completion fish > ~/.config/fish/completions/mediamill.fish`)."""
    from typer._completion_shared import get_completion_script

    shell = shell or os.path.basename(os.environ.get("SHELL", "bash")) or "bash"
    if shell not in SHELLS:
        console.print(f"[red]error:[/red] unknown shell {shell!r}; use one of {', '.join(SHELLS)}")
        raise typer.Exit(2)
    script = get_completion_script(prog_name="mediamill", complete_var="_MEDIAMILL_COMPLETE", shell=shell)
    typer.echo(script)
