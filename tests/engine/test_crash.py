"""Real worker processes: SIGKILL mid-step, graceful SIGTERM, PostgreSQL restarting under 200 jobs."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job, submit_many
from mediamill.runtime import Runtime
from mediamill.store.tables import job_outputs
from tests.engine.conftest import FAST, worker_process, workflow
from tests.helpers import PG_SKIP_REASON, PG_URL, make_runtime, wait_until
from tests.pgcluster import OwnCluster, own_postgres_cluster

FINAL = ("completed", "partial", "failed", "cancelled")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _running_step(rt: Runtime, job_id: int, name: str) -> bool:
    return any(s["step_name"] == name and s["status"] == "running" for s in ops.get_job(rt.engine, job_id)["steps"])


def test_sigkill_mid_step_then_another_worker_finishes(rt: Runtime, tmp_path: Path) -> None:
    workflow(rt, "WF-CRASH", [
        {"name": "thumb", "action": "create_thumbnail", "params": {"size": 64}},
        {"name": "nap", "action": "sleep", "params": {"seconds": 1.5}},
        {"name": "webp", "action": "convert_format", "params": {"format": "webp"}}], queue="crash")
    src = tmp_path / "pic.jpg"
    Image.new("RGB", (320, 200), (200, 30, 30)).save(src, "JPEG")
    job = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, src), workflow_code="WF-CRASH"))
    first = worker_process(rt, "--pool", "crash=1")
    try:
        wait_until(lambda: _running_step(rt, job.id, "nap"), timeout=60, message="sleep step running")
        os.kill(first.pid, signal.SIGKILL)  # the worker only: its step child is orphaned, as in real crashes
        first.wait(timeout=10)
        second = worker_process(rt, "--pool", "crash=1")
        try:
            d = wait_until(lambda: (x := ops.get_job(rt.engine, job.id))["status"] in FINAL and x, timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        _kill_group(first)
    assert d["status"] == "completed" and d["rescue_count"] == 1
    completed = [s["step_name"] for s in d["steps"] if s["status"] == "completed"]
    assert sorted(completed) == ["nap", "thumb", "webp"]  # each step exactly once
    assert [s["status"] for s in d["steps"] if s["step_name"] == "nap"] == ["interrupted", "completed"]
    with rt.engine.connect() as conn:
        names = conn.execute(sa.select(job_outputs.c.name).where(job_outputs.c.job_id == job.id)).scalars().all()
    assert len(names) == len(set(names)) == 2
    assert any(e["event_type"] == "rescue" for e in d["events"])


def test_sigterm_finishes_short_work_and_hands_back_long_work(rt: Runtime, input_file: Path) -> None:
    workflow(rt, "WF-SHORT", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.5}}], queue="term")
    workflow(rt, "WF-LONGER", [{"name": "nap", "action": "sleep", "params": {"seconds": 30}}], queue="term2")
    inp = store_input_file(rt.storage, input_file)
    short = submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-SHORT"))
    long = submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-LONGER"))
    proc = worker_process(rt, "--pool", "term=1", "--pool", "term2=1",
                          env={"MEDIAMILL_SHUTDOWN_GRACE_SECONDS": "6"})
    try:
        wait_until(lambda: _running_step(rt, short.id, "nap") and _running_step(rt, long.id, "nap"), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        _kill_group(proc)
    assert ops.get_job(rt.engine, short.id)["status"] == "completed"
    d = ops.get_job(rt.engine, long.id)
    assert d["status"] == "queued" and d["rescue_count"] == 0  # handed back, not a crash
    assert [s["status"] for s in d["steps"]] == ["interrupted"]
    live = ops.list_workers(rt.engine, lease_seconds=rt.settings.lease_seconds)
    assert [w for w in live if w["alive"]] == []


@pytest.fixture
def own_pg_rt(tmp_path: Path) -> Iterator[tuple[Runtime, OwnCluster]]:
    """A runtime on a PostgreSQL cluster of the test's own (the shared server is never restarted)."""
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    with own_postgres_cluster() as cluster:
        runtime = make_runtime(tmp_path / "data", cluster.url, **FAST)
        try:
            yield runtime, cluster
        finally:
            runtime.close()


def test_postgres_restart_under_load_loses_nothing(own_pg_rt: tuple[Runtime, OwnCluster], input_file: Path) -> None:
    rt, cluster = own_pg_rt
    workflow(rt, "WF-LOAD", [{"name": "a", "action": "noop"}, {"name": "b", "action": "sleep",
                                                                 "params": {"seconds": 0.05}}], queue="load")
    inp = store_input_file(rt.storage, input_file)
    jobs = submit_many(rt.engine, [SubmitRequest(job_input=inp, workflow_code="WF-LOAD") for _ in range(200)])
    procs = [worker_process(rt, "--pool", "load=4") for _ in range(2)]
    try:
        wait_until(lambda: len(ops.list_jobs(rt.engine, status="completed", limit=500)) >= 20, timeout=60)
        cluster.restart()
        rt.engine.dispose()

        def all_done() -> bool:
            try:
                return len(ops.list_jobs(rt.engine, status="completed", limit=500)) == len(jobs)
            except sa.exc.DBAPIError:
                return False

        try:
            wait_until(all_done, timeout=120, interval=0.5, message="all 200 jobs completed after the restart")
        except AssertionError:
            logs = "\n".join(log.read_text(errors="replace")[-3000:]
                              for log in Path(rt.settings.data_dir).glob("worker-*.log"))
            states = {s: len(ops.list_jobs(rt.engine, status=s, limit=500))
                      for s in ("queued", "processing", "failed")}
            raise AssertionError(f"jobs not completed: {states}\nworker logs:\n{logs}") from None
        assert all(p.poll() is None for p in procs)  # the workers reconnected by themselves
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_group(p)
    with rt.engine.connect() as conn:
        stuck = conn.execute(sa.text("SELECT count(*) FROM media_queue")).scalar()
        per_job = conn.execute(sa.text("SELECT job_id, step_id, count(*) FROM step_executions "
                                       "WHERE status = 'completed' GROUP BY job_id, step_id HAVING count(*) > 1")
                               ).all()
    assert stuck == 0 and per_job == []
