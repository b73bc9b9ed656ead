"""Chunked parallel encode through real workers: segments are claimed on their own, the job is parked
meanwhile, the join gives the single-worker renditions, and a SIGKILLed worker costs one segment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store.tables import job_events, media_queue, step_segments
from tests.chunked_media import make_gop_clip, rendition_facts
from tests.engine.conftest import FAST, worker_process, workflow
from tests.helpers import make_runtime, wait_until

FINAL = ("completed", "partial", "failed", "cancelled")
LADDER = [{"name": "v180", "action": "transcode_video", "params": {"resolution": "180p"}},
          {"name": "v144", "action": "transcode_video", "params": {"resolution": "144p"}}]


# Segments that must still be running when their worker is killed or stopped: 8 s each at x264's veryslow
# preset take seconds to encode (at preset medium a 4 s segment took 0.2 s on a quick machine: the kill came late).
SLOW_SECONDS, SLOW_PRESET = 24, "veryslow"


def _ladder(parallel: Any = None, **params: Any) -> list[dict[str, Any]]:
    steps = [{**s, "params": {**s["params"], **params}} for s in LADDER]
    return [{**s, "parallel": parallel} if parallel is not None else s for s in steps]


def _video_workflow(rt: Runtime, code: str, steps: list[dict[str, Any]], queue: str = "video") -> None:
    workflow(rt, code, steps, queue=queue, type="video", input_types=["video/mp4"])


def _submit(rt: Runtime, path: Path, code: str) -> int:
    return submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, path), workflow_code=code)).id


def _finished(rt: Runtime, job_id: int, timeout: float = 180) -> dict[str, Any]:
    return wait_until(lambda: (d := ops.get_job(rt.engine, job_id))["status"] in FINAL and d, timeout=timeout,
                      interval=0.2, message=f"job {job_id} finished")


def _segments(rt: Runtime, job_id: int) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(step_segments).where(step_segments.c.job_id == job_id)
                                              .order_by(step_segments.c.kind.desc(), step_segments.c.seq))
                .mappings()]


def _outputs(rt: Runtime, job: dict[str, Any]) -> dict[str, Path]:
    found = {}
    for o in job["outputs"]:
        local = rt.storage.local_path(o["storage_key"])
        assert local is not None
        found[o["name"]] = local
    return found


@pytest.fixture
def steady(rt: Runtime) -> Iterator[Runtime]:
    """The test's database and storage with leases long enough that a loaded machine never lets one lapse
    (these tests count attempts: only a real fault may cost one)."""
    runtime = make_runtime(Path(rt.settings.data_dir), rt.settings.database_url, migrate=False,
                           **{**FAST, "lease_seconds": 10})
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gop_clip(tmp_path_factory.mktemp("chunked-engine") / "gop.mp4")


def test_parallel_ladder_matches_the_single_worker_run(rt: Runtime, steady: Runtime, clip: Path,
                                                       workers: Callable[..., Worker]) -> None:
    _video_workflow(rt, "WF-ONE", _ladder())
    _video_workflow(rt, "WF-SPLIT", _ladder(parallel=3))
    one, split = _submit(rt, clip, "WF-ONE"), _submit(rt, clip, "WF-SPLIT")
    w1, w2 = workers({"video": 2}, runtime=steady), workers({"video": 2}, runtime=steady)
    a, b = _finished(rt, one), _finished(rt, split)
    assert a["status"] == b["status"] == "completed", b.get("error_message")
    single, chunked = _outputs(rt, a), _outputs(rt, b)
    assert sorted(single) == sorted(chunked) == ["video_144p.mp4", "video_180p.mp4"]
    for name in single:
        x, y = rendition_facts(single[name]), rendition_facts(chunked[name])
        assert (y.width, y.height) == (x.width, x.height)
        assert abs(y.frames - x.frames) <= 1 and y.frames == 300
        assert abs(y.duration - x.duration) <= x.frame_step
        assert y.pts_monotonic and y.dts_monotonic and y.even_spacing
        assert {0.0, 4.0, 8.0} <= set(y.keyframes)  # a keyframe opens every segment
        assert y.audio_duration is not None and abs(y.audio_duration - (x.audio_duration or 0)) <= 0.05
    rows = _segments(rt, split)
    assert [(r["kind"], r["seq"]) for r in rows] == [("video", 0), ("video", 1), ("video", 2), ("audio", 0)]
    # each segment was its own claim, run once, by one of the workers; its parts were cleaned up after the join
    assert all(r["status"] == "completed" and r["attempts"] == 1 for r in rows)
    assert {r["worker_id"] for r in rows} <= {w1.worker_id, w2.worker_id}
    assert sum(r["spec"].get("frames", 0) for r in rows) == 300
    assert all(rt.storage.local_path(k) is None or not rt.storage.local_path(k).exists()
               for r in rows for k in r["output_keys"])
    waits = [e for e in b["events"] if e["event_type"] == "wait"]
    assert waits and waits[0]["data"]["reason"] == "split" and waits[0]["data"]["segments"] == 3
    # the steps record one completed execution each, like the single-worker run
    assert sorted((s["step_name"], s["status"]) for s in b["steps"]) == [("v144", "completed"),
                                                                         ("v180", "completed")]
    assert ops.get_job(rt.engine, one)["steps"] and not _segments(rt, one)


def test_short_input_runs_in_one_piece(rt: Runtime, tmp_path: Path, workers: Callable[..., Worker]) -> None:
    _video_workflow(rt, "WF-SPLIT-AUTO", _ladder(parallel="auto"))
    short = make_gop_clip(tmp_path / "short.mp4", seconds=3)
    job = _submit(rt, short, "WF-SPLIT-AUTO")
    workers({"video": 1})
    d = _finished(rt, job)
    assert d["status"] == "completed" and not _segments(rt, job)
    assert rendition_facts(_outputs(rt, d)["video_180p.mp4"]).frames == 75


def test_parked_job_holds_no_slot(rt: Runtime, steady: Runtime, clip: Path, workers: Callable[..., Worker]) -> None:
    """One worker with one slot: the job parks after the split, so the same slot runs every segment."""
    _video_workflow(rt, "WF-SPLIT-1", _ladder(parallel=4))
    job = _submit(rt, clip, "WF-SPLIT-1")
    w = workers({"video": 1}, runtime=steady)
    d = _finished(rt, job)
    assert d["status"] == "completed"
    rows = _segments(rt, job)
    assert len(rows) == 5 and {r["worker_id"] for r in rows} == {w.worker_id}
    with rt.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(media_queue)
                            .where(media_queue.c.job_id == job)).scalar() == 0


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a worker and give it its grace period; SIGKILL its group when it overstays."""
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_sigkilled_worker_costs_one_segment(rt: Runtime, tmp_path: Path) -> None:
    clip = make_gop_clip(tmp_path / "bigger.mp4", seconds=SLOW_SECONDS, size="640x360")
    _video_workflow(rt, "WF-SPLIT-KILL", _ladder(parallel=3, preset=SLOW_PRESET), queue="kill")
    job = _submit(rt, clip, "WF-SPLIT-KILL")
    lease = {"MEDIAMILL_LEASE_SECONDS": "5"}  # a loaded machine must not let a live worker's lease lapse
    first = worker_process(rt, "--pool", "kill=1", env=lease)
    second: subprocess.Popen[bytes] | None = None
    try:
        victim = wait_until(lambda: next((r for r in _segments(rt, job) if r["status"] == "processing"), None),
                            timeout=120, interval=0.02, message="a segment running on the first worker")
        os.kill(first.pid, signal.SIGKILL)  # the worker only: its step child is orphaned, as in real crashes
        first.wait(timeout=10)
        second = worker_process(rt, "--pool", "kill=2", env=lease)
        d = _finished(rt, job, timeout=240)
    finally:
        _kill_group(first)
        _terminate(second)
    assert d["status"] == "completed", d.get("error_message")
    rows = {(r["kind"], r["seq"]): r for r in _segments(rt, job)}
    killed = rows[(victim["kind"], victim["seq"])]
    assert killed["attempts"] == 2 and killed["worker_id"] != victim["worker_id"]
    assert all(r["attempts"] == 1 for key, r in rows.items() if key != (victim["kind"], victim["seq"]))
    with rt.engine.connect() as conn:
        rescues = conn.execute(sa.select(job_events.c.data).where(job_events.c.job_id == job,
                                                                  job_events.c.event_type == "rescue")).scalars().all()
    assert [r["segment"] for r in rescues] == [victim["seq"]]
    assert d["rescue_count"] == 0  # the job itself was parked, never lost
    for path in _outputs(rt, d).values():
        facts = rendition_facts(path)
        assert facts.frames == SLOW_SECONDS * 25 and facts.pts_monotonic and facts.even_spacing


def _fail_segment_once(rt: Runtime, seq: int) -> Callable[[], None]:
    """Fault injection at the database: the first plan inserted gets segment ``seq`` with a 10 ms timeout
    (written in the splitting worker's own transaction, so no worker can claim it before). Every attempt
    of that segment then times out for real (a retryable class); later plans are left alone."""
    done: list[bool] = []

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if done or not statement.lstrip().upper().startswith("INSERT INTO STEP_SEGMENTS"):
            return
        done.append(True)
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        cursor.execute(f"SELECT id, task FROM step_segments WHERE kind = 'video' AND seq = {mark} "
                       "ORDER BY id DESC LIMIT 1", (seq,))
        row_id, task = cursor.fetchone()
        task = json.loads(task) if isinstance(task, str) else task
        cast = "CAST(%s AS JSON)" if conn.dialect.name == "postgresql" else "?"
        cursor.execute(f"UPDATE step_segments SET task = {cast} WHERE id = {mark}",
                       (json.dumps({**task, "timeout": 0.01}), row_id))

    sa.event.listen(rt.engine, "after_cursor_execute", after)
    return lambda: sa.event.remove(rt.engine, "after_cursor_execute", after)


def test_failed_segment_is_retried_alone(rt: Runtime, steady: Runtime, clip: Path,
                                        workers: Callable[..., Worker]) -> None:
    steps = [{**s, "on_failure": "retry", "retry_count": 2} for s in _ladder(parallel=3)]
    _video_workflow(rt, "WF-SPLIT-RETRY", steps)
    undo = _fail_segment_once(steady, seq=1)
    try:
        job = _submit(rt, clip, "WF-SPLIT-RETRY")
        workers({"video": 2}, runtime=steady)
        d = _finished(rt, job, timeout=300)
    finally:
        undo()
    assert d["status"] == "completed", d.get("error_message")
    rows = _segments(rt, job)
    first = [r for r in rows if r["status"] == "discarded"]
    again = [r for r in rows if r["status"] == "completed"]
    # the faulty segment ran 1 + retry_count times on its own; the others ran once and were not re-run
    assert {(r["kind"], r["seq"]): r["attempts"] for r in first} == {
        ("video", 0): 1, ("video", 1): 3, ("video", 2): 1, ("audio", 0): 1}
    assert [r["error_class"] for r in first if r["seq"] == 1 and r["kind"] == "video"] == ["timeout"]
    # then the unit failed with the segment's class, the step was retried and the unit planned afresh
    assert len(again) == 4 and all(r["attempts"] == 1 and r["step_name"] == "v180" for r in again)
    runs = [(s["step_name"], s["status"]) for s in d["steps"]]
    assert runs == [("v180", "failed"), ("v180", "completed"), ("v144", "completed")], runs
    assert d["steps"][0]["error_class"] == "timeout"
    assert "segment 2 (video) failed" in d["steps"][0]["error_message"]
    assert d["retry_count"] == 1
    assert rendition_facts(_outputs(rt, d)["video_180p.mp4"]).frames == 300


def test_sigterm_hands_running_segments_back(rt: Runtime, tmp_path: Path) -> None:
    """A worker stopping past its grace period gives its segment back (attempt not counted), not a crash."""
    clip = make_gop_clip(tmp_path / "bigger.mp4", seconds=SLOW_SECONDS, size="640x360")
    _video_workflow(rt, "WF-SPLIT-TERM", _ladder(parallel=3, preset=SLOW_PRESET), queue="term")
    job = _submit(rt, clip, "WF-SPLIT-TERM")
    first = worker_process(rt, "--pool", "term=1", env={"MEDIAMILL_SHUTDOWN_GRACE_SECONDS": "0.2",
                                                        "MEDIAMILL_LEASE_SECONDS": "10"})
    second: subprocess.Popen[bytes] | None = None
    try:
        running = wait_until(lambda: next((r for r in _segments(rt, job) if r["status"] == "processing"), None),
                             timeout=120, interval=0.02, message="a segment running on the first worker")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
        back = next(r for r in _segments(rt, job) if r["id"] == running["id"])
        # (an 8 s segment of two renditions at preset veryslow takes seconds, never 0.2 s)
        assert (back["status"], back["attempts"], back["worker_id"]) == ("queued", 0, None)
        second = worker_process(rt, "--pool", "term=2", env={"MEDIAMILL_LEASE_SECONDS": "10"})
        d = _finished(rt, job, timeout=240)
    finally:
        _kill_group(first)
        _terminate(second)
    assert d["status"] == "completed", d.get("error_message")
    assert all(r["attempts"] == 1 for r in _segments(rt, job))  # nothing was run twice to completion
    assert d["rescue_count"] == 0
