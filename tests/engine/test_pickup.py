"""The path from a NOTIFY to a claim, on PostgreSQL: an idle worker claims in the listener's thread (the
notification woke it; waking the claimer's thread too costs an idle host a fifth of a millisecond), a busy one is
only told; the claimer keeps its connection between rounds instead of taking one from the pool at every wake-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.engine import roles, wakeup
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store.db import PING_AFTER_IDLE_SECONDS
from tests.engine.conftest import workflow
from tests.helpers import wait_until

FINAL = ("completed", "partial", "failed", "cancelled")


@pytest.fixture
def idle_worker(pg_rt: Runtime) -> Iterator[Worker]:
    w = Worker(pg_rt, pools={"q": 2}).start()
    wait_until(w._listening.is_set, timeout=10)
    yield w
    w.stop(grace=2)


def _submit(rt: Runtime, input_file: Path) -> int:
    return submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, input_file),
                                               workflow_code="WF-P")).id


def _done(rt: Runtime, job_id: int) -> bool:
    return ops.get_job(rt.engine, job_id)["status"] in FINAL


class _WatchedWake(threading.Event):
    """The worker's wake-up event, telling whether its claimer's thread is waiting on it."""

    waiting = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting += 1  # (only the claimer's thread waits on it)
        try:
            return super().wait(timeout)
        finally:
            self.waiting -= 1


def test_an_idle_worker_claims_in_the_thread_the_notification_woke(
        pg_rt: Runtime, input_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow(pg_rt, "WF-P", [{"name": "a", "action": "noop"}], queue="q")
    claimed_in: list[tuple[str, int]] = []
    notices = [0]
    claim_round, on_notice = roles.Claimer.claim_round, roles.Claimer.on_notice

    def traced(self: roles.Claimer, pool: str, cap: int, free: int) -> roles._Round:
        got = claim_round(self, pool, cap, free)
        claimed_in.extend((threading.current_thread().name, c.job["id"]) for c in got.batch)
        return got

    def counted(self: roles.Claimer) -> None:
        on_notice(self)
        notices[0] += 1  # (after its own wake-up of the claimer, if any)

    monkeypatch.setattr(roles.Claimer, "claim_round", traced)
    monkeypatch.setattr(roles.Claimer, "on_notice", counted)
    # as from another process (an API server, a client): the wake-up is the NOTIFY alone, not also this
    # process's own wake-up of its workers, which wakes the claimer's thread directly
    monkeypatch.setattr(wakeup, "notify_local", lambda queues: None)
    monkeypatch.setattr(roles.Claimer, "idle_wait", lambda self: 60.0)  # no timed round of its own meanwhile
    w = Worker(pg_rt, pools={"q": 2})
    wake = w._wake = _WatchedWake()
    w.start()
    try:
        wait_until(w._listening.is_set, timeout=10)
        for n in range(3):
            # the previous job's aftermath is over: its outcome counted (after the writer's wake-up), its
            # notification handled (after the listener's), and the claimer back waiting with nothing to do
            wait_until(lambda n=n: w.jobs_done == n and notices[0] == n and wake.waiting > 0
                       and not wake.is_set() and not w.claimer.turn.locked(), timeout=10)
            job = _submit(pg_rt, input_file)
            wait_until(lambda j=job: _done(pg_rt, j), timeout=30)
            assert (("mm-listener", job) in claimed_in), claimed_in
            assert ops.get_job(pg_rt.engine, job)["status"] == "completed"
    finally:
        w.stop(grace=2)


def test_a_busy_claimer_is_only_told(pg_rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    w = Worker(pg_rt, pools={"q": 2})
    calls: list[str] = []
    monkeypatch.setattr(w.claimer, "claim_all", lambda: calls.append("claim") or True)
    with w.claimer.turn:  # the claimer's thread is in a round
        w.claimer.on_notice()
    assert calls == [] and w._wake.is_set()
    w._wake.clear()
    w.claimer.on_notice()  # idle: claimed here, and the claimer told, as there may be more
    assert calls == ["claim"] and w._wake.is_set() and not w.claimer.turn.locked()


def test_a_failed_claim_on_a_notification_goes_to_the_claimer(pg_rt: Runtime,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    w = Worker(pg_rt, pools={"q": 2})

    def broken() -> bool:
        raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(w.claimer, "claim_all", broken)
    w.claimer.on_notice()  # the listener goes on listening; the claimer's loop retries with its guard
    assert w._wake.is_set() and not w.claimer.turn.locked()
    w._wake.clear()
    monkeypatch.setattr(w.claimer, "claim_all", lambda: False)
    w.claimer.on_notice()  # nothing found: the idle claimer sleeps on
    assert not w._wake.is_set()


def test_the_claimer_keeps_its_connection_between_rounds(pg_rt: Runtime) -> None:
    w = Worker(pg_rt, pools={"q": 2})
    checkouts: list[Any] = []
    sa.event.listen(pg_rt.engine.pool, "checkout", lambda dbapi, rec, proxy: checkouts.append(dbapi))
    sessions = []
    for _ in range(3):
        with w.claimer.transaction() as conn:
            conn.execute(sa.text("SELECT 1"))
            sessions.append(conn.connection.dbapi_connection)
    assert len(checkouts) == 1 and len(set(map(id, sessions))) == 1
    sent: list[str] = []
    sa.event.listen(pg_rt.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    w.claimer._session_used -= PING_AFTER_IDLE_SECONDS + 1  # unused for a while: pinged first, as the pool would
    with w.claimer.transaction() as conn:
        conn.execute(sa.text("SELECT 2"))
    assert sent == ["SELECT 1", "SELECT 2"] and len(checkouts) == 1
    with pytest.raises(RuntimeError), w.claimer.transaction() as conn:
        raise RuntimeError("a round that fails")
    assert w.claimer._session is None  # given back: the next round takes a fresh one
    w.claimer.end_session()
    assert pg_rt.engine.pool.checkedout() == 0


def test_what_arrives_together_is_one_claim_and_other_queues_none(
        pg_rt: Runtime, idle_worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    notices: list[float] = []
    monkeypatch.setattr(idle_worker.claimer, "on_notice", lambda: notices.append(time.monotonic()))
    with pg_rt.engine.begin() as conn:  # delivered together, at the commit
        for queue in ["q"] * 20 + ["elsewhere"] * 5:
            conn.execute(sa.text("SELECT pg_notify('mediamill_jobs', :q)"), {"q": queue})
    with pg_rt.engine.begin() as conn:  # a marker: once it is seen, everything before it was seen too
        conn.execute(sa.text("SELECT pg_notify('mediamill_cancel', '0')"))
    wait_until(lambda: time.monotonic() - idle_worker.canceller.noted < 5, timeout=10)
    assert 1 <= len(notices) <= 2, len(notices)  # (not one a notification)
    notices.clear()
    idle_worker.canceller.noted = 0.0
    with pg_rt.engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_notify('mediamill_jobs', 'elsewhere')"))
        conn.execute(sa.text("SELECT pg_notify('mediamill_jobs', 'also-elsewhere')"))
    with pg_rt.engine.begin() as conn:  # a marker: once it is seen, the two before it were seen too
        conn.execute(sa.text("SELECT pg_notify('mediamill_cancel', '0')"))
    wait_until(lambda: time.monotonic() - idle_worker.canceller.noted < 5, timeout=10)
    assert notices == []  # another queue's work is not this worker's


def test_a_kept_connection_that_sat_idle_is_pinged_and_replaced_when_gone(pg_rt: Runtime) -> None:
    w = Worker(pg_rt, pools={"q": 2})
    with w.claimer.transaction() as conn:
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    with pg_rt.engine.connect() as admin:  # the server ends that session (a restart, an idle timeout, a failover)
        admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    wait_until(lambda: not _alive(pg_rt, pid), timeout=10)
    w.claimer._session_used -= PING_AFTER_IDLE_SECONDS + 1
    with w.claimer.transaction() as conn:  # pinged, found gone, replaced: the round does not fail
        assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid
    w.claimer.end_session()


def _alive(rt: Runtime, pid: int) -> bool:
    with rt.engine.connect() as conn:
        return bool(conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar())
