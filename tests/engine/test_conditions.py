"""`when:` conditions see the job's submission facts through real workers, probed or not."""

from __future__ import annotations

from mediamill.engine import operations as ops
from mediamill.runtime import Runtime
from tests.engine.conftest import workflow
from tests.helpers import wait_until


def test_when_sees_the_input_filename_without_a_probe(rt: Runtime, submit, workers) -> None:
    # mime, size and filename are on the job row: no probe runs, and the condition still sees them
    workflow(rt, "WF-NAME", [{"name": "txt only", "action": "noop", "when": "input.filename.endsWith('.txt')"},
                             {"name": "pdf only", "action": "noop", "when": "input.filename.endsWith('.pdf')"},
                             {"name": "small", "action": "noop", "when": "input.size > 0 && input.mime != ''"}])
    job = submit("WF-NAME")
    workers({"q": 1})
    d = wait_until(lambda: (got := ops.get_job(rt.engine, job.id))["status"] in ("completed", "failed") and got,
                   timeout=30, message="job finished")
    assert d["status"] == "completed"
    assert d["input_metadata"] is None  # nothing was probed
    assert [(s["step_name"], s["status"]) for s in d["steps"]] == [("txt only", "completed"),
                                                                   ("pdf only", "skipped"),
                                                                   ("small", "completed")]
