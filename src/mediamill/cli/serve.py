"""`mediamill serve`: migrate, install built-ins, run the HTTP app (and the in-process workers)."""

from __future__ import annotations

import uvicorn

from mediamill.api.app import create_app
from mediamill.cli.output import console
from mediamill.runtime import Runtime


def run_serve(*, host: str | None, port: int | None) -> None:
    rt = Runtime()
    rt.prepare()
    bind_host = host or rt.settings.host
    bind_port = port or rt.settings.port
    app = create_app(rt)
    console.print(f"mediamill serving on http://{bind_host}:{bind_port} "
                  f"(database: {rt.settings.effective_database_url.split('://')[0]}, "
                  f"storage: {rt.settings.effective_storage_url})", highlight=False)
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning")
