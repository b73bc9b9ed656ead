"""A claim never takes more than it asked for, whatever plan PostgreSQL picks for it.

After ``ANALYZE`` of a nearly empty queue (the normal state between bursts) the statistics say the queue holds one
row. With ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)`` the planner then picks a nested-loop
semi join whose inner side is the locking pick: it is re-run for every scanned row, each run skipping the rows the
statement already locked, and one claim takes the whole backlog. The claim's ``= ANY(ARRAY(…))`` runs it once.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.runtime import Runtime
from mediamill.store import lifecycle as tx
from mediamill.store.tables import media_queue as mq
from mediamill.store.tables import queues
from mediamill.store.timeutil import utcnow
from tests.engine.conftest import workflow

BACKLOG = 30


def _backlog(rt: Runtime, tmp_path: Any, n: int = BACKLOG) -> None:
    workflow(rt, "WF-CLAIM", [{"name": "a", "action": "noop"}])
    with rt.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE media_queue")  # the statistics of an idle queue …
    src = tmp_path / "in.txt"
    src.write_text("x")
    for _ in range(n):  # … then a burst arrives before autovacuum looks again
        submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, src), workflow_code="WF-CLAIM"))


def _small_statistics(conn: Connection) -> None:
    """What ANALYZE of a one-row queue leaves behind (set here so the test does not race autovacuum)."""
    conn.exec_driver_sql("UPDATE pg_class SET reltuples = 1, relpages = 1 WHERE oid = 'media_queue'::regclass")


def _old_in_subquery_claim(conn: Connection, limit: int) -> int:
    """The claim as it was: ``id IN (locking subquery)``. Returns how many rows it took."""
    pick = (sa.select(mq.c.id).where(mq.c.status == "queued", mq.c.scheduled_time <= utcnow())
            .where(~sa.exists().where(queues.c.name == mq.c.queue_name, queues.c.paused.is_(True)))
            .order_by(mq.c.priority.desc(), mq.c.scheduled_time, mq.c.id).limit(limit)
            .with_for_update(skip_locked=True))
    rows = conn.execute(mq.update().where(mq.c.id.in_(pick.scalar_subquery()))
                        .values(status="processing", worker_id="old-form").returning(mq.c.id)).all()
    return len(rows)


def test_claim_takes_at_most_its_limit_when_statistics_say_the_queue_is_small(pg_rt: Runtime, tmp_path) -> None:
    _backlog(pg_rt, tmp_path)
    with pg_rt.engine.connect() as conn:
        with conn.begin() as t:  # the hazard is real in this setting: the old form takes the whole backlog
            _small_statistics(conn)
            assert _old_in_subquery_claim(conn, 2) > 2
            t.rollback()
        for limit in (1, 2, 5):
            with conn.begin() as t:
                _small_statistics(conn)
                got = tx.claim(conn, worker_id="w", queue=None, limit=limit, lease_seconds=30)
                assert len(got) == limit
                t.rollback()


def test_three_concurrent_claimers_never_hold_more_than_they_asked_for(pg_rt: Runtime, tmp_path) -> None:
    _backlog(pg_rt, tmp_path)
    with pg_rt.engine.begin() as conn:
        _small_statistics(conn)
    sizes: dict[str, list[int]] = {f"w{i}": [] for i in range(3)}
    taken: dict[str, list[int]] = {name: [] for name in sizes}
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        try:
            start.wait()
            while True:
                with pg_rt.engine.begin() as conn:
                    got = tx.claim(conn, worker_id=name, queue=None, limit=2, lease_seconds=30)
                    sizes[name].append(len(got))
                    if not got:
                        return
                    held = conn.execute(sa.select(sa.func.count()).select_from(mq)
                                        .where(mq.c.worker_id == name, mq.c.status == "processing")).scalar_one()
                    assert held <= 2, f"{name} holds {held}"
                    taken[name] += [c.job["id"] for c in got]
                    finishes = [tx.Finish(job=c.job, status="completed", workflow_code="WF-CLAIM",
                                          workflow_type="generic", workflow_version=1, total_steps=1) for c in got]
                    assert len(tx.finish_jobs(conn, name, finishes)) == len(got)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(max(s) <= 2 for s in sizes.values()), sizes
    every = [j for ids in taken.values() for j in ids]
    assert len(every) == BACKLOG and len(set(every)) == BACKLOG  # all taken, none twice
    assert sum(1 for ids in taken.values() if ids) >= 2, taken  # the work was shared, not hoarded


@pytest.mark.parametrize("limit", [1, 3])
def test_claim_takes_exactly_its_limit_from_a_backlog(rt: Runtime, tmp_path, limit: int) -> None:
    workflow(rt, "WF-CLAIM", [{"name": "a", "action": "noop"}])
    src = tmp_path / "in.txt"
    src.write_text("x")
    for _ in range(5):
        submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, src), workflow_code="WF-CLAIM"))
    with rt.engine.begin() as conn:
        assert len(tx.claim(conn, worker_id="w", queue=None, limit=limit, lease_seconds=30)) == limit
