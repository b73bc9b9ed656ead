"""The scrape endpoint option of the long-running commands (`worker`, `api`, `notifier`)."""

from __future__ import annotations

from typing import Any

import typer

from mediamill.observability.endpoint import MetricsEndpoint, private_metrics_dir
from mediamill.runtime import Runtime

METRICS_PORT_HELP = ("serve /metrics, /healthz and /readyz on this port (default MEDIAMILL_METRICS_PORT; "
                     "0 = off)")


def metrics_port_option() -> Any:
    """``--metrics-port`` (a fresh Option per command: Typer options are not shared safely)."""
    return typer.Option(None, "--metrics-port", min=0, max=65535, help=METRICS_PORT_HELP)


def resolve_port(rt: Runtime, flag: int | None) -> int:
    """The flag when given, else ``MEDIAMILL_METRICS_PORT``."""
    return rt.settings.metrics_port if flag is None else flag


def isolate_metrics(rt: Runtime, role: str, port: int) -> None:
    """Before observability is configured: a process scraped on its own port counts only its own events."""
    if port:
        private_metrics_dir(rt.settings, role)


def start_endpoint(rt: Runtime, role: str, port: int, **kwargs: Any) -> MetricsEndpoint | None:
    """Start the endpoint when a port is set; None otherwise."""
    if not port:
        return None
    bind = rt.settings.metrics_host or rt.settings.host
    return MetricsEndpoint(role=role, port=port, bind=bind, engine=rt.engine, **kwargs).start()
