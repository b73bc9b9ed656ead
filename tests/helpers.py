"""Helpers shared by the test packages: databases (SQLite always, PostgreSQL when configured),
runtimes, workflows, polling."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.config import Settings
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from mediamill.workflows.loader import parse_workflow, validate_document

PG_URL = os.environ.get("MEDIAMILL_TEST_POSTGRES_URL", "")
PG_SKIP_REASON = "MEDIAMILL_TEST_POSTGRES_URL is not set (PostgreSQL tests need a server)"
BACKENDS = ["sqlite", "postgres"]


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (which is returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout} s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_s3(monkeypatch: pytest.MonkeyPatch, **extra_env: str) -> Iterator[int]:
    """moto's S3 server on a free loopback port, with the ``AWS_*`` variables pointing boto3 at it (plus any
    ``extra_env``); yields the port and stops the server afterwards."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
                     "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", **extra_env}.items():
            monkeypatch.setenv(k, v)
        yield port
    finally:
        server.stop()


def _admin_engine() -> sa.engine.Engine:
    url = PG_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    # NullPool: each use opens a new connection, so a server restart during a test does not break cleanup
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@contextlib.contextmanager
def postgres_database(prefix: str = "mm_test") -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); fails loudly when the server is unreachable."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextlib.contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database URL of the given backend (``sqlite`` or ``postgres``)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'mediamill.db'}"
        return
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    with postgres_database() as url:
        yield url


def make_runtime(data_dir: Path, database_url: str = "", *, migrate: bool = True, **overrides: Any) -> Runtime:
    rt = Runtime(Settings(data_dir=data_dir, database_url=database_url, **overrides))
    if migrate:
        rt.migrate()
    return rt


def apply_workflow(rt: Runtime, doc: dict[str, Any] | str, author: str = "tests") -> workflow_repo.SavedVersion:
    wf = parse_workflow(doc) if isinstance(doc, str) else validate_document(doc)
    with rt.engine.begin() as conn:
        return workflow_repo.save_version(conn, wf, author=author)


class LiveServer:
    """The app under a real uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, rt: Runtime) -> None:
        import uvicorn

        from mediamill.api.app import create_app
        from mediamill.api.server import server_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(rt)
        config = server_config(self.app, host="127.0.0.1", port=self.port, settings=rt.settings,
                               log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=15, message="uvicorn started")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
