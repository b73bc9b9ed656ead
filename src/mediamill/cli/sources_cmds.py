"""`mediamill sources …` (watch folders and buckets) and `mediamill deliveries …` (where jobs may deliver)."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import typer
from pydantic import ValidationError

from mediamill.cli.context import open_runtime
from mediamill.cli.output import console, handle_errors, print_json, print_table
from mediamill.errors import InvalidInput

JSON = typer.Option(False, "--json", help="print JSON")
TENANT = typer.Option("default", "--tenant", help="tenant id")
app = typer.Typer(help="Sources: folders and buckets whose new files become jobs.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Where per-job deliver overrides may write.", no_args_is_help=True)
COLUMNS = ["id", "name", "kind", "location", "workflow", "after", "enabled", "owner", "waiting", "files", "lag_s",
           "last_error"]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="sources")
    root.add_typer(deliveries_app, name="deliveries")


def _row(view: dict[str, Any]) -> dict[str, Any]:
    files = view["files"]
    return {**view, "location": view.get("path") or view.get("url"), "waiting": view["waiting_reason"] or "",
            "files": " ".join(f"{k}={v}" for k, v in files.items() if v), "lag_s": view["lag_seconds"]}


@app.command("list")
@handle_errors
def list_(tenant: str = TENANT, as_json: bool = JSON) -> None:
    """Every source of the tenant with its state (who runs it, files by status, lag, last error)."""
    from mediamill.sources import service

    rt = open_runtime()
    with rt.engine.connect() as conn:
        views = service.list_views(conn, tenant_id=tenant)
    if as_json:
        print_json(views)
        return
    print_table([_row(v) for v in views], COLUMNS, title="sources")


@app.command("show")
@handle_errors
def show(ref: str = typer.Argument(..., help="id or name"), tenant: str = TENANT, as_json: bool = JSON) -> None:
    """One source and its settings."""
    from mediamill.sources import service
    from mediamill.store import sources_repo

    rt = open_runtime()
    with rt.engine.connect() as conn:
        view = service.public_view(conn, sources_repo.find_source(conn, ref, tenant_id=tenant))
    if as_json:
        print_json(view)
        return
    for key, value in view.items():
        console.print(f"[bold]{key}[/bold]: {json.dumps(value, default=str)}", highlight=False)


def _metadata(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidInput("--metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput("--metadata must be a JSON object")
    return value


@app.command("add")
@handle_errors
def add(name: str = typer.Argument(..., help="a name for the source"),
        folder: str | None = typer.Option(None, "--folder", help="watch this folder (absolute path)"),
        bucket: str | None = typer.Option(None, "--bucket", help="watch this s3://bucket/prefix"),
        workflow: str = typer.Option("auto", "--workflow", help='workflow code, or "auto" (routing rules)'),
        pattern: list[str] = typer.Option(["*"], "--pattern", help="glob of files to take (repeatable)"),
        recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="look into sub-folders"),
        after: str = typer.Option("keep", "--after", help="keep | move | delete (once the job is over)"),
        done_dir: str | None = typer.Option(None, "--done-dir", help="where --after move puts succeeded files"),
        failed_dir: str | None = typer.Option(None, "--failed-dir", help="where --after move puts failed files"),
        priority: int | None = typer.Option(None, "--priority", help="job priority (default: the workflow's)"),
        metadata: str | None = typer.Option(None, "--metadata", help='job metadata JSON, e.g. {"title": "{stem}"}'),
        settle: float | None = typer.Option(None, "--settle", help="seconds a file must stay unchanged"),
        poll: float | None = typer.Option(None, "--poll", help="scan / listing interval in seconds"),
        max_queue: int | None = typer.Option(None, "--max-queue", help="pause while the queue is this deep"),
        polling: bool = typer.Option(False, "--polling", help="no file-system events (network mounts)"),
        disabled: bool = typer.Option(False, "--disabled", help="create it paused"),
        tenant: str = TENANT, as_json: bool = JSON) -> None:
    """Create a folder (--folder) or bucket (--bucket) source. A bucket source's event secret is printed once."""
    from mediamill.sources import service
    from mediamill.store.workflow_repo import install_builtins

    rt = open_runtime()
    if bool(folder) == bool(bucket):
        raise InvalidInput("name one of --folder PATH or --bucket s3://bucket/prefix")
    data: dict[str, Any] = {
        "name": name, "kind": "folder" if folder else "bucket", "workflow": workflow, "patterns": pattern,
        "recursive": recursive, "after": after, "enabled": not disabled, "metadata": _metadata(metadata),
        "polling": polling, **({"path": folder} if folder else {"url": bucket})}
    optional = {"done_dir": done_dir, "failed_dir": failed_dir, "priority": priority, "settle_seconds": settle,
                "poll_seconds": poll, "max_queue": max_queue}
    data.update({k: v for k, v in optional.items() if v is not None})
    install_builtins(rt.engine)  # a source may name a built-in workflow before `serve` first ran
    with rt.engine.begin() as conn:
        view = service.create(conn, rt.settings, tenant_id=tenant, data=data)
    if as_json:
        print_json(view)
        return
    console.print(f"source {view['id']} ({view['name']}) created", highlight=False)
    if view["kind"] == "bucket":
        console.print(f"bucket events: POST {view['events_path']} with Authorization: Bearer {view['secret']}",
                      highlight=False, soft_wrap=True)


@app.command("update")
@handle_errors
def update(ref: str = typer.Argument(..., help="id or name"),
           set_: list[str] = typer.Option([], "--set", help="FIELD=JSON-or-text, e.g. --set after=move (repeatable)"),
           enable: bool | None = typer.Option(None, "--enable/--disable", help="resume or pause the source"),
           tenant: str = TENANT, as_json: bool = JSON) -> None:
    """Change a source; the process running it restarts it with the change."""
    from mediamill.sources import SourcePatch, service
    from mediamill.store import sources_repo

    rt = open_runtime()
    changes: dict[str, Any] = {} if enable is None else {"enabled": enable}
    for item in set_:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InvalidInput(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            changes[key] = json.loads(raw)
        except ValueError:
            changes[key] = raw
    try:
        patch = SourcePatch.model_validate(changes)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"--set: {problems}") from None
    with rt.engine.begin() as conn:
        row = sources_repo.find_source(conn, ref, tenant_id=tenant)
        view = service.update(conn, row["id"], tenant_id=tenant, patch=patch)
    if as_json:
        print_json(view)
    else:
        console.print(f"source {view['id']} ({view['name']}) updated", highlight=False)


@app.command("delete")
@handle_errors
def delete(ref: str = typer.Argument(..., help="id or name"), tenant: str = TENANT) -> None:
    """Delete a source and its file log (the jobs it created stay)."""
    from mediamill.store import sources_repo

    rt = open_runtime()
    with rt.engine.begin() as conn:
        row = sources_repo.find_source(conn, ref, tenant_id=tenant)
        sources_repo.delete_source(conn, row["id"], tenant_id=tenant)
    console.print(f"source {row['id']} ({row['name']}) deleted", highlight=False)


@app.command("files")
@handle_errors
def files(ref: str = typer.Argument(..., help="id or name"),
          status: str | None = typer.Option(None, "--status", help="pending,claimed,submitted,done,failed,skipped"),
          limit: int = typer.Option(50, "--limit", min=1, max=500), tenant: str = TENANT, as_json: bool = JSON) -> None:
    """What the source took, newest first: each file's status, job and error."""
    from mediamill.sources import service
    from mediamill.store import sources_repo

    rt = open_runtime()
    with rt.engine.connect() as conn:
        row = sources_repo.find_source(conn, ref, tenant_id=tenant)
        rows = [service.file_view(r) for r in sources_repo.list_files(conn, row["id"], status=status, limit=limit)]
    if as_json:
        print_json(rows)
        return
    print_table(rows, ["id", "path", "status", "size", "job_id", "after_done", "first_seen_at", "error"],
                title=f"files of {row['name']}")


@app.command("rotate-secret")
@handle_errors
def rotate_secret(ref: str = typer.Argument(..., help="id or name"), tenant: str = TENANT) -> None:
    """Replace a bucket source's event secret (printed once)."""
    from mediamill.sources import service
    from mediamill.store import sources_repo

    rt = open_runtime()
    with rt.engine.begin() as conn:
        row = sources_repo.find_source(conn, ref, tenant_id=tenant)
        secret = service.rotate(conn, rt.settings, row["id"], tenant_id=tenant)
    console.print(secret, highlight=False)


@app.command("run")
@handle_errors
def run() -> None:
    """Run the sources without the API or workers (several processes may run; one runs each source)."""
    from mediamill.runtime import configure_observability
    from mediamill.sources.manager import SourceManager

    rt = open_runtime()  # the database exists: sources are configured in it
    configure_observability(rt, "sources")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    manager = SourceManager(rt).start()
    console.print(f"running sources as {manager.owner}", highlight=False)
    try:
        stop.wait()
    finally:
        manager.stop()
        rt.close()


# --------------------------------------------------------------------------- deliveries
@deliveries_app.command("prefixes")
@handle_errors
def prefixes(tenant: str = TENANT, as_json: bool = JSON) -> None:
    """Where the tenant's jobs may deliver when they override their workflow's deliver:."""
    from mediamill.store import tenant_settings

    rt = open_runtime()
    with rt.engine.connect() as conn:
        found = tenant_settings.deliver_prefixes(conn, tenant)
    if as_json:
        print_json(found)
    else:
        for p in found:
            console.print(p, highlight=False)


@deliveries_app.command("allow")
@handle_errors
def allow(prefix: list[str] = typer.Argument(..., help="folder path or s3://bucket/prefix"),
          tenant: str = TENANT) -> None:
    """Add prefixes to the tenant's allow-list."""
    _change(tenant, add=prefix)


@deliveries_app.command("disallow")
@handle_errors
def disallow(prefix: list[str] = typer.Argument(..., help="a prefix on the list"), tenant: str = TENANT) -> None:
    """Remove prefixes from the tenant's allow-list."""
    _change(tenant, remove=prefix)


def _change(tenant: str, *, add: list[str] | None = None, remove: list[str] | None = None) -> None:
    from mediamill.store import tenant_settings

    rt = open_runtime()
    for p in add or []:
        if not (p.startswith("s3://") or p.startswith("/")):
            raise InvalidInput(f"expected s3://bucket/prefix or an absolute folder path, got {p!r}")
    with rt.engine.begin() as conn:
        current = set(tenant_settings.deliver_prefixes(conn, tenant))
        new = tenant_settings.set_deliver_prefixes(conn, tenant, sorted((current | set(add or [])) - set(remove or [])))
    console.print("allowed: " + (", ".join(new) or "(nothing)"), highlight=False)
