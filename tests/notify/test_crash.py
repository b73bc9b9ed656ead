"""A `mediamill notifier` process SIGKILLed mid-delivery loses nothing; two notifiers share the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mediamill.installkey import SecretBox
from mediamill.notify import channels as ch
from mediamill.store.tables import workflow_notifications as wn

from .support import Receiver, add_job_event, insert_job, insert_workflow, make_settings, wait_until


def _box(tmp_path: Path, db_url: str) -> SecretBox:
    """The secret box of the notifier processes below (same data dir: same install key)."""
    return SecretBox.for_settings(make_settings(tmp_path, db_url))


def _start_notifier(db_url: str, tmp_path: Path, *extra: str, lock_seconds: float = 30) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEDIAMILL_DATABASE_URL": db_url, "MEDIAMILL_DATA_DIR": str(tmp_path),
           "MEDIAMILL_URL_ALLOWLIST": "127.0.0.1", "MEDIAMILL_NOTIFY_LOCK_SECONDS": str(lock_seconds),
           "MEDIAMILL_NOTIFY_POLL_SECONDS": "0.05", "MEDIAMILL_NOTIFY_BACKOFF_BASE_SECONDS": "0.1",
           "MEDIAMILL_ALERT_DEFAULT_RULES": "false", "MEDIAMILL_LOG_FORMAT": "json",
           "MEDIAMILL_METRICS_DIR": str(tmp_path / "metrics")}
    log = tmp_path / f"notifier-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as out:  # a file, not a pipe nobody reads: a chatty process must never block on it
        proc = subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", "notifier", *extra], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    # signal handlers are installed by then: a SIGTERM from the test means a graceful stop, not a kill
    wait_until(lambda: b"notifier started" in log.read_bytes() or proc.poll() is not None, timeout=60,
               message="notifier started")
    return proc


def _statuses(engine: Engine) -> dict[str, set[str]]:
    """event id → statuses of its delivery rows."""
    out: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for event_id, status in conn.execute(sa.select(wn.c.event_id, wn.c.status).where(wn.c.channel.is_not(None))):
            out.setdefault(event_id, set()).add(status)
    return out


def test_killed_notifier_loses_nothing(engine: Engine, db_url: str, tmp_path: Path) -> None:
    receiver = Receiver(hold=True)
    try:
        with engine.begin() as conn:
            ch.create_channel(conn, tenant_id="default", kind="webhook", config={"url": receiver.url},
                              allowlist="127.0.0.1", box=_box(tmp_path, db_url))
        wf = insert_workflow(engine)
        first = [add_job_event(engine, insert_job(engine, workflow_id=wf)) for _ in range(3)]

        proc = _start_notifier(db_url, tmp_path, "--no-alerts", lock_seconds=1)
        wait_until(lambda: receiver.count() == 3, timeout=30, message="three deliveries in flight")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _statuses(engine) == {e: {"pending"} for e in first}  # in flight, not lost

        later = [add_job_event(engine, insert_job(engine, workflow_id=wf)) for _ in range(2)]
        receiver.release()
        proc = _start_notifier(db_url, tmp_path, "--no-alerts")
        try:
            wait_until(lambda: _statuses(engine) == {e: {"sent"} for e in first + later}, timeout=30,
                       message="everything sent after the restart")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        assert set(receiver.ids()) == set(first + later)
    finally:
        receiver.close()


def test_two_notifiers_share_without_double_sending(engine: Engine, db_url: str, tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        with engine.begin() as conn:
            ch.create_channel(conn, tenant_id="default", kind="webhook", config={"url": receiver.url},
                              allowlist="127.0.0.1", box=_box(tmp_path, db_url))
        wf = insert_workflow(engine)
        procs = [_start_notifier(db_url, tmp_path, "--no-alerts") for _ in range(2)]
        try:
            events = [add_job_event(engine, insert_job(engine, workflow_id=wf)) for _ in range(30)]
            wait_until(lambda: _statuses(engine) == {e: {"sent"} for e in events}, timeout=60,
                       message="30 events sent by two notifiers")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                assert p.wait(15) == 0
        assert sorted(receiver.ids()) == sorted(events)  # each exactly once: claims never overlapped
    finally:
        receiver.close()
