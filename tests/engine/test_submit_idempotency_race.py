"""Two submits with one Idempotency-Key at once: the one whose insert the unique key refuses answers with
the job the other created, on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediamill.engine import submit
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.runtime import Runtime
from tests.engine.conftest import workflow


def test_the_loser_of_an_idempotency_race_replays_the_winner_s_job(rt: Runtime, input_file: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    workflow(rt, "WF-RACE", [{"name": "a", "action": "noop"}])
    stored = store_input_file(rt.storage, input_file)

    def request() -> SubmitRequest:
        return SubmitRequest(job_input=stored, workflow_code="WF-RACE", idempotency_key="order-7",
                             idempotency_hash="h1")

    winner = submit_job(rt.engine, request())
    real = submit._idempotent_replay
    checks: list[bool] = []

    def missed_once(conn: Any, req: SubmitRequest) -> submit.SubmittedJob | None:
        # the loser's own check ran before the winner committed: it saw no job with the key
        if not checks:
            checks.append(True)
            return None
        return real(conn, req)

    monkeypatch.setattr(submit, "_idempotent_replay", missed_once)
    loser = submit_job(rt.engine, request())
    assert loser.replayed and loser.id == winner.id and loser.job_code == winner.job_code
    assert not winner.replayed

