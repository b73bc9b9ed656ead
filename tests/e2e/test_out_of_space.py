"""Out of space inside a step, through a real worker: the worker's scratch space is a small tmpfs
that is full when the step runs. The step fails with class ``resource`` and a message without any
server path, is retried after back-off, and completes once space is freed."""

from __future__ import annotations

import os
from pathlib import Path

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from tests.helpers import apply_workflow, make_runtime, wait_until
from tests.media.conftest import Media
from tests.tmpfs import small_tmpfs


def _fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up to ``leave`` free bytes."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as fh:
        fh.truncate(0)
        remaining = max(0, free - leave)
        while remaining > 0:
            n = min(remaining, 1 << 20)
            fh.write(b"\0" * n)
            remaining -= n
    return filler


def test_out_of_space_in_a_step_is_resource_and_retried_after_back_off(tmp_path: Path) -> None:
    media = Media(tmp_path / "media")
    (tmp_path / "media").mkdir()
    with small_tmpfs(tmp_path / "scratch-disk", 16) as disk:
        # only the worker's scratch space (under the data dir) is on the small disk
        rt = make_runtime(disk, f"sqlite:///{tmp_path / 'db.sqlite'}", storage_url=str(tmp_path / "storage"),
                          retry_base_seconds=0.5, retry_max_seconds=2)
        rt.prepare()
        apply_workflow(rt, {"code": "WF-E2E-NOSPACE", "name": "transcode", "type": "video",
                            "input_types": ["video/mp4"], "retry_count": 5,
                            "steps": [{"name": "Transcode 480p", "action": "transcode_video",
                                       "params": {"resolution": "480p", "preset": "ultrafast"},
                                       "on_failure": "retry"}]})
        inp = store_input_file(rt.storage, media.video_hd)
        job = submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-E2E-NOSPACE"))
        filler = _fill(disk, leave=16 * 1024)
        worker = Worker(rt, pools={"*": 1}).start()
        try:
            retry = wait_until(lambda: next((e for e in ops.get_job(rt.engine, job.id)["events"]
                                             if e["event_type"] == "retry"), None), timeout=60,
                               message="a retry after the out-of-space failure")
            assert retry["data"]["error_class"] == "resource", retry["data"]
            assert retry["data"]["delay_seconds"] >= 0 and retry["data"]["ceiling_seconds"] > 0
            failed = [s for s in ops.get_job(rt.engine, job.id)["steps"] if s["status"] == "failed"]
            assert failed and all(s["error_class"] == "resource" for s in failed)
            for s in failed:
                assert "disk space" in s["error_message"], s["error_message"]
                assert str(disk) not in s["error_message"] and "/" not in s["error_message"], s["error_message"]
            filler.unlink()  # space comes back: the retry goes through
            detail = wait_until(lambda: (d := ops.get_job(rt.engine, job.id))["status"] in
                                ("completed", "failed") and d, timeout=90, message="job finished")
        finally:
            worker.stop(grace=5)
            rt.close()
        assert detail["status"] == "completed", detail["error_message"]
        assert detail["retry_count"] >= 1


def test_out_of_space_while_storing_a_steps_outputs_is_resource_and_retried(tmp_path: Path) -> None:
    """The step's work succeeded but storage is full when its outputs are stored: the same resource
    failure, retried after back-off, instead of failing the job for good."""
    media = Media(tmp_path / "media")
    (tmp_path / "media").mkdir()
    with small_tmpfs(tmp_path / "storage-disk", 16) as disk:
        rt = make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", storage_url=str(disk / "storage"),
                          retry_base_seconds=0.5, retry_max_seconds=2, storage_min_free_mb=0)
        rt.prepare()
        apply_workflow(rt, {"code": "WF-E2E-NOSTORE", "name": "transcode", "type": "video",
                            "input_types": ["video/mp4"], "retry_count": 5,
                            "steps": [{"name": "Transcode 480p", "action": "transcode_video",
                                       "params": {"resolution": "480p", "preset": "ultrafast"},
                                       "on_failure": "retry"}]})
        inp = store_input_file(rt.storage, media.video_hd)
        job = submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-E2E-NOSTORE"))
        filler = _fill(disk, leave=4 * 1024)
        worker = Worker(rt, pools={"*": 1}).start()
        try:
            retry = wait_until(lambda: next((e for e in ops.get_job(rt.engine, job.id)["events"]
                                             if e["event_type"] == "retry"), None), timeout=60,
                               message="a retry after storage filled up")
            assert retry["data"]["error_class"] == "resource", retry["data"]
            assert str(disk) not in retry["data"]["error"]
            filler.unlink()
            detail = wait_until(lambda: (d := ops.get_job(rt.engine, job.id))["status"] in
                                ("completed", "failed") and d, timeout=90, message="job finished")
        finally:
            worker.stop(grace=5)
            rt.close()
        assert detail["status"] == "completed", detail["error_message"]
        assert detail["retry_count"] >= 1
