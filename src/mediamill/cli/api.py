"""`mediamill api`: the HTTP API alone (no workers) — scale it out beside `mediamill worker`."""

from __future__ import annotations

import os

import typer
import uvicorn

from mediamill.cli import observe
from mediamill.cli.output import console, handle_errors
from mediamill.runtime import Runtime


def app_factory() -> object:
    """Uvicorn factory: each worker process builds its own runtime and app."""
    from mediamill.api.app import create_app
    from mediamill.api.server import configure_protocol
    from mediamill.runtime import configure_observability

    rt = Runtime()
    configure_observability(rt, "api")
    configure_protocol(rt.settings)  # this worker process's header deadline
    return create_app(rt)


@handle_errors
def api(host: str | None = typer.Option(None, help="bind address (default 127.0.0.1)"),
        port: int | None = typer.Option(None, help="port (default 8000)"),
        workers: int | None = typer.Option(None, help="worker processes (default MEDIAMILL_API_WORKERS or 1)"),
        migrate: bool = typer.Option(True, help="apply migrations first (--no-migrate: a migrate job owns the "
                                              "schema; refuse to start unless it is at this version's)"),
        metrics_port: int | None = observe.metrics_port_option()) -> None:
    """Serve the HTTP API only; run workers with `mediamill worker`."""
    from mediamill.installkey import require_shared_key

    rt = Runtime()
    require_shared_key(rt.settings, host or rt.settings.host, "api")  # before anything is created
    rt.prepare(migrate=migrate)
    port_for_metrics = observe.resolve_port(rt, metrics_port)
    observe.isolate_metrics(rt, "api", port_for_metrics)  # shared by this command's uvicorn processes only
    from mediamill.store.auth_repo import ensure_admin_key

    key = ensure_admin_key(rt.engine)
    if key:
        console.print(f"created an admin API key (shown once): {key}", highlight=False, soft_wrap=True)
    from mediamill.cli.serve import storage_warning

    warning = storage_warning(rt)
    if warning:
        console.print(warning, style="bold yellow", highlight=False, soft_wrap=True, markup=False)
    rt.close()
    bind_host, bind_port = host or rt.settings.host, port or rt.settings.port
    count = workers or rt.settings.api_workers
    console.print(f"mediamill API on http://{bind_host}:{bind_port} ({count} process(es))", highlight=False)
    os.environ.setdefault("MEDIAMILL_PROCESS_ROLE", "api")
    if port_for_metrics:
        from mediamill.runtime import configure_observability

        configure_observability(rt, "api")
        # the database gauges come from the API: one answer per replica, dashboards take the max
        endpoint = observe.start_endpoint(rt, "api", port_for_metrics, db_gauges=True)
        assert endpoint is not None
        console.print(f"metrics on {endpoint.url}/metrics", highlight=False)
    from mediamill.api.server import server_options  # here, not at the top: every CLI command imports this module

    uvicorn.run("mediamill.cli.api:app_factory", factory=True, host=bind_host, port=bind_port, workers=count,
                log_level="warning", proxy_headers=True, timeout_graceful_shutdown=10,
                **server_options(rt.settings))  # head deadline and caps (431 for oversized heads)
