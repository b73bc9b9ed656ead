"""Metrics that tell the whole truth: idle queues export 0 (not "No data"), and every dead-lettered
job is counted — failed in the worker's fast path, by the normal runner, or as poison by the rescuer —
labelled by workflow and error class, equal to the dead-letter table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.config import Settings
from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.observability import metrics
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store import tables as t
from mediamill.store import workflow_repo
from mediamill.store.timeutil import utcnow
from tests.helpers import apply_workflow, wait_until

from .test_metrics import check_exposition, fresh_metrics, samples

__all__ = ["fresh_metrics"]  # the autouse fixture of the metrics tests
BUILTIN_QUEUES = ("audio_processing", "document_processing", "image_processing", "video_analysis",
                  "video_processing")


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    fast = settings.model_copy(update={"lease_seconds": 2, "poll_interval": 0.1, "max_rescues": 2,
                                       "retry_base_seconds": 0.05})
    runtime = Runtime(fast)
    yield runtime
    runtime.close()


def test_idle_queues_export_zero_depth(rt: Runtime) -> None:
    workflow_repo.install_builtins(rt.engine)
    with TestClient(create_app(rt)) as client:
        res = client.get("/metrics")
    assert res.status_code == 200
    check_exposition(res.text)
    got = samples(res.text)
    for queue in BUILTIN_QUEUES:
        for state in ("queued", "delayed", "processing"):
            assert got[("mediamill_queue_depth", (("queue", queue), ("state", state)))] == 0, (queue, state)
        assert got[("mediamill_queue_oldest_wait_seconds", (("queue", queue),))] == 0
        assert got[("mediamill_queue_paused", (("queue", queue),))] == 0
    assert 'mediamill_queue_depth{queue="image_processing",state="queued"} 0.0' in res.text


def test_a_busy_queue_still_exports_its_empty_states(rt: Runtime, tmp_path: Path) -> None:
    apply_workflow(rt, {"code": "WF-IDLE", "name": "idle", "type": "generic", "queue": "idle",
                        "steps": [{"name": "a", "action": "noop"}]})
    apply_workflow(rt, {"code": "WF-BUSY", "name": "busy", "type": "generic", "queue": "busy",
                        "steps": [{"name": "a", "action": "noop"}]})
    _submit(rt, tmp_path, "WF-BUSY")
    text = metrics.render(rt.engine)[0].decode()
    check_exposition(text)
    got = samples(text)
    assert got[("mediamill_queue_depth", (("queue", "busy"), ("state", "queued")))] == 1
    assert got[("mediamill_queue_depth", (("queue", "busy"), ("state", "processing")))] == 0
    assert got[("mediamill_queue_depth", (("queue", "idle"), ("state", "queued")))] == 0


def _submit(rt: Runtime, tmp_path: Path, code: str) -> int:
    source = tmp_path / "input.txt"
    source.write_text("hello\n")
    return submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, source),
                                               workflow_code=code)).id


def _poison(rt: Runtime, job_id: int) -> None:
    """The job's worker died as often as allowed but once: the next rescue dead-letters it."""
    with rt.engine.begin() as conn:
        claimed = tx.claim(conn, worker_id="dead-worker", queue="dl", limit=10, lease_seconds=30)
        assert [c.job["id"] for c in claimed] == [job_id]
        conn.execute(t.media_queue.update().where(t.media_queue.c.job_id == job_id)
                     .values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        conn.execute(t.workflow_jobs.update().where(t.workflow_jobs.c.id == job_id)
                     .values(rescue_count=rt.settings.max_rescues - 1))


def test_every_dead_lettered_job_is_counted_by_workflow_and_error_class(rt: Runtime, tmp_path: Path) -> None:
    nap = {"name": "nap", "action": "sleep", "params": {"seconds": 0}}
    docs = {"WF-DL-FAST": [{"name": "boom", "action": "fail", "params": {"error_class": "transient"}}],
            "WF-DL-SLOW": [nap, {"name": "boom", "action": "fail", "params": {"error_class": "unavailable"}}],
            "WF-DL-POISON": [nap]}
    for code, steps in docs.items():
        apply_workflow(rt, {"code": code, "name": code, "type": "generic", "queue": "dl", "steps": steps})
    poison = _submit(rt, tmp_path, "WF-DL-POISON")
    _poison(rt, poison)
    jobs = [poison] + [_submit(rt, tmp_path, "WF-DL-FAST") for _ in range(3)] + \
        [_submit(rt, tmp_path, "WF-DL-SLOW") for _ in range(2)]
    worker = Worker(rt, pools={"dl": 2}).start()
    try:
        wait_until(lambda: all(ops.get_job(rt.engine, j)["status"] == "failed" for j in jobs), timeout=60,
                   message="every job dead-lettered")
    finally:
        worker.stop(grace=2)
    text = metrics.render(rt.engine)[0].decode()
    check_exposition(text)
    got = samples(text)
    counted = {(dict(labels)["workflow"], dict(labels)["error_class"]): value
               for (name, labels), value in got.items() if name == "mediamill_jobs_dead_lettered_total"}
    with rt.engine.connect() as conn:
        table = {(w, c): n for w, c, n in conn.execute(
            sa.select(t.dead_letters.c.workflow_code, t.dead_letters.c.error_class, sa.func.count())
            .group_by(t.dead_letters.c.workflow_code, t.dead_letters.c.error_class))}
    assert counted == {("WF-DL-FAST", "transient"): 3, ("WF-DL-SLOW", "unavailable"): 2,
                       ("WF-DL-POISON", "resource"): 1}
    assert counted == table
