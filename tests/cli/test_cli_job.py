"""``mediamill job ID --json`` as a user types it (a real subprocess): a failed job says when it finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from tests.helpers import apply_workflow, make_runtime, wait_until


def _failed_job(rt: Runtime, tmp_path: Path) -> int:
    apply_workflow(rt, {"code": "WF-CLI-FAIL", "name": "fail", "type": "generic", "queue": "cli",
                        "steps": [{"name": "Boom", "action": "fail", "params": {"error_class": "invalid_input"}}]})
    source = tmp_path / "input.txt"
    source.write_text("hello\n")
    job = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, source),
                                              workflow_code="WF-CLI-FAIL"))
    worker = Worker(rt, pools={"cli": 1}).start()
    try:
        wait_until(lambda: ops.get_job(rt.engine, job.id)["status"] == "failed", timeout=30)
    finally:
        worker.stop(grace=2)
    return job.id


def test_job_json_carries_finished_at(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path / "data")
    job_id = _failed_job(rt, tmp_path)
    rt.close()
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(tmp_path / "data"), "MEDIAMILL_DATABASE_URL": "",
           "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "mediamill.cli.main", "job", str(job_id), "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    detail = json.loads(proc.stdout)
    assert detail["status"] == "failed" and detail["completed_at"] is None
    assert detail["finished_at"] and detail["finished_at"] >= detail["started_at"]
