"""One liveness rule from the lease: a worker is alive while its heartbeat is newer than the lease. A killed
worker is marked lost after one lease (API, CLI, dashboard, metrics and alerts read the same rule); rows of
stopped and lost workers are pruned after the retention."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import sqlalchemy as sa

from mediamill.engine import housekeeping
from mediamill.engine import operations as ops
from mediamill.observability.dbgauges import collect_db_gauges
from mediamill.runtime import Runtime
from mediamill.store.tables import workers as workers_t
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import worker_process
from tests.helpers import wait_until


def _state(rt: Runtime, worker_id: str) -> tuple[str, str] | None:
    rows = ops.list_workers(rt.engine, lease_seconds=rt.settings.lease_seconds, include_stopped=True)
    return next(((w["state"], w["status"]) for w in rows if w["id"] == worker_id), None)


def _live_gauge(rt: Runtime) -> float:
    with rt.engine.connect() as conn:
        families = collect_db_gauges(conn, live_seconds=rt.settings.lease_seconds)
    return sum(s.value for f in families if f.name == "mediamill_workers_live" for s in f.samples)


def test_a_killed_worker_is_lost_after_one_lease_and_marked_by_the_fleet(rt: Runtime, workers) -> None:
    proc = worker_process(rt, "--pool", "*=1")
    try:
        wait_until(lambda: ops.list_workers(rt.engine, lease_seconds=rt.settings.lease_seconds), timeout=60)
        victim = ops.list_workers(rt.engine, lease_seconds=rt.settings.lease_seconds)[0]["id"]
        assert _state(rt, victim) == ("live", "running") and _live_gauge(rt) == 1
        os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: its row still says "running"
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = utcnow()
    workers({"*": 1})  # a live worker's housekeeping marks it
    wait_until(lambda: _state(rt, victim) == ("lost", "lost"), timeout=rt.settings.lease_seconds * 4 + 5)
    # dead within about one lease (the rule), not after a fixed minute and a half
    assert (utcnow() - killed_at).total_seconds() < rt.settings.lease_seconds * 3 + 2
    assert victim not in [w["id"] for w in ops.list_workers(rt.engine, lease_seconds=rt.settings.lease_seconds)]
    assert _live_gauge(rt) == 1  # only the new worker


def test_stopped_and_lost_workers_are_pruned_after_the_retention(rt: Runtime) -> None:
    now = utcnow()
    rows = {"fresh-live": ("running", now), "killed": ("running", now - timedelta(seconds=30)),
            "stopped-old": ("stopped", now - timedelta(hours=30)), "lost-old": ("lost", now - timedelta(hours=30)),
            "stopped-new": ("stopped", now - timedelta(hours=1))}
    with rt.engine.begin() as conn:
        conn.execute(workers_t.insert(), [{"id": k, "hostname": "h", "pid": 1, "pools": {"*": 1}, "status": s,
                                          "started_at": hb, "heartbeat_at": hb, "jobs_done": 0} for k, (s, hb)
                                         in rows.items()])
    marked, pruned = housekeeping.mark_and_prune_workers(rt.engine, lease_seconds=rt.settings.lease_seconds,
                                                         retention_hours=24)
    assert (marked, pruned) == (1, 2)
    with rt.engine.connect() as conn:
        left = dict(conn.execute(sa.select(workers_t.c.id, workers_t.c.status)).all())
    assert left == {"fresh-live": "running", "killed": "lost", "stopped-new": "stopped"}
    assert [w["id"] for w in ops.list_workers(rt.engine, lease_seconds=rt.settings.lease_seconds)] == ["fresh-live"]
