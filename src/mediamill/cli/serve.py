"""`mediamill serve`: migrate, install built-ins, run the HTTP app, the workers, the notifier and the sources in
one process."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import uvicorn

from mediamill.api.app import create_app
from mediamill.api.server import server_config
from mediamill.cli.output import console
from mediamill.runtime import Runtime, configure_observability

log = logging.getLogger("mediamill.serve")


def run_serve(*, host: str | None, port: int | None, workers: bool = True) -> None:
    from mediamill.installkey import require_shared_key

    rt = Runtime()
    require_shared_key(rt.settings, host or rt.settings.host, "serve")  # before anything is created
    rt.prepare()
    configure_observability(rt, "serve")
    bind_host = host or rt.settings.host
    bind_port = port or rt.settings.port
    app = create_app(rt)
    login = _admin_login(rt, bind_host, bind_port)
    background = _start_background(rt) if workers else []
    console.print(f"mediamill serving on http://{bind_host}:{bind_port} "
                  f"(database: {rt.settings.effective_database_url.split('://')[0]}, "
                  f"storage: {rt.settings.effective_storage_url})", highlight=False, soft_wrap=True)
    if login:
        console.print(login, highlight=False, soft_wrap=True)
    warning = storage_warning(rt)
    if warning:
        console.print(warning, style="bold yellow", highlight=False, soft_wrap=True, markup=False)
    server = uvicorn.Server(server_config(app, host=bind_host, port=bind_port, settings=rt.settings,
                                          log_level="warning", timeout_graceful_shutdown=5))
    try:
        server.run()
    finally:
        for component in reversed(background):
            with contextlib.suppress(Exception):
                component.stop()
        rt.close()


def storage_warning(rt: Runtime) -> str | None:
    """Check storage at start: a missing or read-only bucket, or a disk below the floor, is said
    at once (naming it) instead of surfacing as failed submits later. The server still starts,
    so it can report the problem on ``/readyz`` and recover when the bucket appears."""
    try:
        health = rt.storage.health()
    except Exception as exc:  # the check itself failing is also worth saying
        problem = f"cannot be checked ({type(exc).__name__})"
    else:
        if health.ok:
            return None
        problem = health.problem or "not ready"
    log.warning("storage not ready: %s", problem)
    return (f"WARNING: storage {rt.settings.effective_storage_url} is not ready: {problem}. "
            "Submits are refused and /readyz answers 503 until this is fixed.")


def _admin_login(rt: Runtime, host: str, port: int) -> str | None:
    """On first start, create an admin key and print it with a one-time login URL."""
    try:
        from mediamill.store import auth_repo
    except ImportError:
        return None
    key = auth_repo.ensure_admin_key(rt.engine)
    if not key:
        return None
    base = rt.settings.public_url or f"http://{host}:{port}"
    login_url = getattr(auth_repo, "login_url", None)
    url = login_url(rt, base, key) if login_url else f"{base}/login"
    return f"admin API key (shown once): {key}\nlog in: {url}"


def _start_background(rt: Runtime) -> list[Any]:
    from mediamill.engine.worker import Worker

    started: list[Any] = [Worker(rt, pools=rt.settings.parsed_pools() or {"*": 2}).start()]
    from mediamill.notify import Notifier

    started.append(Notifier(engine=rt.engine, settings=rt.settings).start())
    if rt.settings.run_sources:
        from mediamill.sources.manager import SourceManager

        started.append(SourceManager(rt).start())
    return started
