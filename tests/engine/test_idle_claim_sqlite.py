"""SQLite has one write lock: an idle worker's claim round looks (without a lock) before it claims, so a round
that finds nothing never makes a writer — a submit, another worker's finish — wait for it."""

from __future__ import annotations

import threading
from pathlib import Path

from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from tests.engine.conftest import FAST, workflow
from tests.helpers import make_runtime


def test_an_idle_claim_round_takes_no_write_lock_and_a_due_job_is_still_claimed(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path / "data", **FAST)  # the embedded default: SQLite
    try:
        workflow(rt, "WF-IDLE", [{"name": "a", "action": "sleep", "params": {"seconds": 0}}])
        w = Worker(rt, pools={"q": 1})  # never started: its claimer's rounds are driven here
        writer = rt.engine.connect()
        writer.begin()  # BEGIN IMMEDIATE: this connection holds the database's write lock
        took: list[bool | None] = []
        round_ = threading.Thread(target=lambda: took.append(w.claimer.claim_all()))
        round_.start()
        round_.join(timeout=10)  # (a claim that wanted the lock would wait the busy timeout, 30 s)
        finished = not round_.is_alive()
        writer.rollback()
        writer.close()
        round_.join()
        assert finished and took == [False]

        src = tmp_path / "in.txt"
        src.write_text("hello\n")
        job = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, src),
                                                  workflow_code="WF-IDLE"))
        assert w.claimer.claim_all() is True  # the look sees the due job; the claim takes it
        assert job.id in w.running or job.id in w._owned
        w.stop(grace=5)
    finally:
        rt.close()
