"""In-memory jobs on PostgreSQL run inside their claim's transaction: the claim only locks their queue entries
(``FOR UPDATE SKIP LOCKED``; the row lock is the lease, which a crash gives back by itself) and their outcomes are
written before it commits — an entry costs one write, its delete, instead of an update and a delete. What does
not finish there (a retry, a job that needs the normal path after all) is claimed for real in the same
transaction and goes the ordinary way."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.engine import roles
from mediamill.engine.submit import SubmitRequest, SubmittedJob, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store.tables import job_events, media_queue, step_executions, workflow_notifications
from tests.engine.conftest import workflow
from tests.helpers import wait_until

FINAL = ("completed", "partial", "failed", "cancelled")


@pytest.fixture
def go(pg_rt: Runtime, input_file: Path) -> Callable[..., SubmittedJob]:
    def submit(code: str) -> SubmittedJob:
        return submit_job(pg_rt.engine, SubmitRequest(job_input=store_input_file(pg_rt.storage, input_file),
                                                      workflow_code=code))

    return submit


@pytest.fixture
def worker(pg_rt: Runtime) -> Iterator[Worker]:
    w = Worker(pg_rt, pools={"q": 4}).start()
    yield w
    w.stop(grace=2)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    execute = psycopg.Cursor.execute

    def counted(self: psycopg.Cursor[Any], query: Any, *args: Any, **kw: Any) -> Any:
        seen.append(str(query))
        return execute(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    return seen


def _done(rt: Runtime, ids: list[int]) -> bool:
    return all(ops.get_job(rt.engine, i)["status"] in FINAL for i in ids)


def _warm(rt: Runtime, go: Callable[..., SubmittedJob]) -> None:
    """One in-memory job first: the pool's next claims know its jobs finish in memory (``fast_hint``)."""
    first = go("WF-NOOP").id
    wait_until(lambda: _done(rt, [first]), timeout=30)


def test_in_memory_jobs_finish_in_their_claim_s_transaction(pg_rt: Runtime, go, worker: Worker,
                                                              statements: list[str]) -> None:
    workflow(pg_rt, "WF-NOOP", [{"name": "a", "action": "noop"}, {"name": "b", "action": "noop"}])
    _warm(pg_rt, go)
    ops.pause_queue(pg_rt.engine, "q")
    ids = [go("WF-NOOP").id for _ in range(30)]
    statements.clear()
    ops.resume_queue(pg_rt.engine, "q")
    wait_until(lambda: _done(pg_rt, ids), timeout=30)
    claims = [s for s in statements if s.startswith("UPDATE media_queue SET") and "lease_expires_at" in s
              and "worker_id" in s.split("WHERE")[0]]
    assert not claims, claims  # no entry was marked processing: locked, run, written, deleted
    with pg_rt.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(media_queue)).scalar() == 0
        execs = conn.execute(sa.select(step_executions.c.job_id, step_executions.c.status)
                             .where(step_executions.c.job_id.in_(ids))).all()
        finals = conn.execute(sa.select(job_events.c.job_id).where(job_events.c.job_id.in_(ids),
                                                                    job_events.c.event_type == "status",
                                                                    job_events.c.data["final"].as_boolean())).all()
        outbox = conn.execute(sa.select(workflow_notifications.c.job_id)
                              .where(workflow_notifications.c.job_id.in_(ids))).all()
    assert {ops.get_job(pg_rt.engine, i)["status"] for i in ids} == {"completed"}
    assert len(execs) == 60 and {s for _j, s in execs} == {"completed"}
    assert sorted(j for (j,) in finals) == sorted(ids) and sorted(j for (j,) in outbox) == sorted(ids)


def test_a_held_job_that_fails_is_requeued_and_retried(pg_rt: Runtime, go, worker: Worker) -> None:
    workflow(pg_rt, "WF-NOOP", [{"name": "a", "action": "noop"}])
    workflow(pg_rt, "WF-FLAKY", [{"name": "flaky", "action": "fail", "params": {"times": 1},
                                  "on_failure": "retry", "retry_count": 2}])
    _warm(pg_rt, go)
    job = go("WF-FLAKY").id
    wait_until(lambda: _done(pg_rt, [job]), timeout=30)
    d = ops.get_job(pg_rt.engine, job)
    assert d["status"] == "completed" and d["retry_count"] == 1
    assert [s["status"] for s in d["steps"]] == ["failed", "completed"]


def test_a_held_job_whose_run_breaks_takes_the_normal_path(pg_rt: Runtime, go, worker: Worker,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    workflow(pg_rt, "WF-NOOP", [{"name": "a", "action": "noop"}])
    _warm(pg_rt, go)
    run_fast = roles.run_fast
    broke: list[int] = []

    def breaks_once(svc: Any, claimed: Any, wf: Any) -> Any:
        if not broke:
            broke.append(claimed.job["id"])
            raise RuntimeError("a bug in the in-memory path")
        return run_fast(svc, claimed, wf)

    monkeypatch.setattr(roles, "run_fast", breaks_once)
    ids = [go("WF-NOOP").id for _ in range(3)]
    wait_until(lambda: _done(pg_rt, ids), timeout=30)
    assert broke and {ops.get_job(pg_rt.engine, i)["status"] for i in ids} == {"completed"}
    with pg_rt.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(media_queue)).scalar() == 0
