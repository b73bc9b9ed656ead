"""Idle workers in other processes wake at once on new work (NOTIFY on PostgreSQL, a datagram on SQLite)."""

from __future__ import annotations

import signal
import statistics
from datetime import datetime
from pathlib import Path

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.runtime import Runtime
from tests.engine.conftest import worker_process, workflow
from tests.helpers import wait_until


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.rstrip("Z"))


def test_idle_worker_process_picks_up_without_polling(rt: Runtime, input_file: Path) -> None:
    workflow(rt, "WF-PING", [{"name": "a", "action": "noop"}], queue="ping")
    proc = worker_process(rt, "--pool", "ping=2", env={"MEDIAMILL_POLL_INTERVAL": "10"})
    try:
        wait_until(lambda: ops.list_workers(rt.engine, lease_seconds=rt.settings.lease_seconds), timeout=60,
                   message="worker registered")
        inp = store_input_file(rt.storage, input_file)
        pickups = []
        for _ in range(10):
            job = submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-PING"))
            d = wait_until(lambda j=job: (x := ops.get_job(rt.engine, j.id))["status"] == "completed" and x,
                           timeout=5, interval=0.002)
            pickups.append((_ts(d["started_at"]) - _ts(d["submitted_at"])).total_seconds())
        # a 10 s poll interval would make these seconds; a wake-up makes them milliseconds
        assert statistics.median(pickups) < 0.25, pickups
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
