"""Statuses are StrEnums: each equals the string stored and shown; the sets hold what the code asks about."""

from __future__ import annotations

import json

from mediamill.statuses import DONE_STEP, FINISHED_STEP, SUCCEEDED_JOB, TERMINAL_JOB, JobStatus, StepStatus


def test_members_equal_their_stored_strings() -> None:
    assert JobStatus.PARTIAL == "partial" and f"{JobStatus.FAILED}" == "failed"
    assert json.dumps({"status": StepStatus.SKIPPED}) == '{"status": "skipped"}'
    assert "completed" in TERMINAL_JOB and "queued" not in TERMINAL_JOB


def test_the_sets_nest() -> None:
    assert set(SUCCEEDED_JOB) < set(TERMINAL_JOB) == {"completed", "partial", "failed", "cancelled"}
    assert set(DONE_STEP) < set(FINISHED_STEP) == {"completed", "skipped", "failed"}
    assert {JobStatus(s) for s in TERMINAL_JOB} | {JobStatus.PENDING, JobStatus.QUEUED, JobStatus.PROCESSING} == \
        set(JobStatus)
