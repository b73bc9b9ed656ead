"""Steps run in child processes with limits: a crash, a memory hog or a hang fails only the step, classified."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediamill.config import MediaLimits
from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from tests.engine.conftest import FAST, workflow
from tests.helpers import make_runtime, wait_until

FINAL = ("completed", "partial", "failed", "cancelled")


@pytest.mark.parametrize(("mode", "error_class", "timeout"), [
    ("segfault", "internal", 30), ("exit", "internal", 30), ("memory", "resource", 30), ("hang", "timeout", 1)])
def test_misbehaving_step_fails_classified_and_worker_survives(mode: str, error_class: str, timeout: int,
                                                               tmp_path: Path, input_file: Path) -> None:
    rt = make_runtime(tmp_path / "data", "", **FAST, limits=MediaLimits(child_memory_mb=768))
    workflow(rt, "WF-BREAK", [{"name": "boom", "action": "crash", "params": {"mode": mode},
                               "timeout_seconds": timeout}])
    workflow(rt, "WF-FINE", [{"name": "nap", "action": "sleep", "params": {"seconds": 0.01}}])
    w = Worker(rt, pools={"q": 1}).start()
    try:
        inp = store_input_file(rt.storage, input_file)
        bad = submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-BREAK"))
        d = wait_until(lambda: (x := ops.get_job(rt.engine, bad.id))["status"] in FINAL and x, timeout=60)
        assert d["status"] == "failed" and d["error_class"] == error_class, d["error_message"]
        assert d["steps"][0]["error_class"] == error_class
        good = submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-FINE"))
        d2 = wait_until(lambda: (x := ops.get_job(rt.engine, good.id))["status"] in FINAL and x, timeout=30)
        assert d2["status"] == "completed"  # the same worker goes on
    finally:
        w.stop(grace=1)
        rt.close()
