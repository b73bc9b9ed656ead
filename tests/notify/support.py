"""Shared helpers for the notify and observability tests: databases, receivers, polling, rows."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mediamill.config import Settings, load_settings
from mediamill.store import outbox
from mediamill.store.db import upgrade
from mediamill.store.tables import workflow_definitions, workflow_jobs
from mediamill.store.timeutil import utcnow
from tests.helpers import database_url, postgres_database, wait_until

PG_ENV = "MEDIAMILL_TEST_POSTGRES_URL"

__all__ = ["postgres_database", "wait_until"]  # shared with tests/helpers.py, re-exported here


# --------------------------------------------------------------------------- databases
@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A migrated database URL of ``kind`` (sqlite | postgres)."""
    with database_url(kind, tmp_path) as url:
        upgrade(url)
        yield url


def make_settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path, "database_url": url, "url_allowlist": "127.0.0.1",
        "notify_backoff_base_seconds": 0.1, "notify_backoff_max_seconds": 0.3, "notify_poll_seconds": 0.05,
        "metrics_dir": str(tmp_path / "metrics"), "alert_default_rules": False, "public_url": "http://mm.test",
    }
    values.update(overrides)
    return load_settings(**values)


# --------------------------------------------------------------------------- rows
def insert_workflow(engine: Engine, code: str = "WF-VIDEO-TRANSCODE", type_: str = "video") -> int:
    with engine.begin() as conn:
        got = conn.execute(sa.select(workflow_definitions.c.id).where(
            workflow_definitions.c.workflow_code == code)).scalar()
        if got:
            return int(got)
        return int(conn.execute(workflow_definitions.insert().values(
            workflow_code=code, workflow_name=code, workflow_type=type_, queue_name=type_,
        ).returning(workflow_definitions.c.id)).scalar_one())


def insert_job(engine: Engine, *, workflow_id: int, status: str = "completed", tenant_id: str = "default",
               filename: str = "video1.mp4", request_id: str | None = None, error_class: str | None = None,
               completed_at: Any = None) -> int:
    """A job as the engine leaves it: ``finished_at`` on every final state, ``completed_at`` on success only."""
    ended = completed_at or utcnow()
    final = status in ("completed", "partial", "failed", "cancelled")
    with engine.begin() as conn:
        return int(conn.execute(workflow_jobs.insert().values(
            job_code="JOB-" + uuid.uuid4().hex[:10].upper(), workflow_id=workflow_id, status=status,
            tenant_id=tenant_id, input_filename=filename, request_id=request_id, error_class=error_class,
            started_at=utcnow(), completed_at=ended if status in ("completed", "partial") else None,
            finished_at=ended if final else None,
        ).returning(workflow_jobs.c.id)).scalar_one())


def job_payload(job_id: int, *, status: str = "completed", workflow_code: str = "WF-VIDEO-TRANSCODE",
                notify: dict[str, Any] | None = None, error_class: str | None = None,
                error_message: str | None = None) -> dict[str, Any]:
    return {"job_id": job_id, "job_code": f"JOB-{job_id}", "workflow_code": workflow_code,
            "workflow_version": 1, "status": status, "priority": 5, "submitted_by": "user_001",
            "error_class": error_class, "error_message": error_message, "started_at": None,
            "completed_at": None, "duration_seconds": 83.4,
            "outputs": [{"name": "720p.mp4", "mime_type": "video/mp4", "bytes": 1234}],
            "metadata": {}, "notify": notify}


def add_job_event(engine: Engine, job_id: int, *, event_type: str = "job.completed", tenant_id: str = "default",
                  **payload_kw: Any) -> str:
    status = event_type.split(".", 1)[1]
    with engine.begin() as conn:
        return outbox.add_event(conn, event_type=event_type, tenant_id=tenant_id, job_id=job_id,
                                payload=job_payload(job_id, status=status, **payload_kw))


# --------------------------------------------------------------------------- receivers
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script of statuses."""

    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    requests: list[Received] = field(default_factory=list)
    hold: bool = False  # keep every answer back until release() (a delivery "in flight")

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body))
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                    held = receiver.hold
                if held:
                    receiver._released.wait(30)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def release(self) -> None:
        """Answer the held requests and stop holding."""
        self.hold = False
        self._released.set()

    def ids(self) -> list[str]:
        with self._lock:
            return [r.headers.get("webhook-id", "") for r in self.requests]

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
