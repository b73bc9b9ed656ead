"""mediamill behind PgBouncer in transaction pooling mode: migrations, submissions, a worker and cancellations
all go through a PgBouncer of the test's own, whose small server pool hands each transaction whatever server
session is free. Nothing may rely on a session: no server-side prepared statements (psycopg prepares a statement
after five runs, and the next transaction may land on a session that never saw it), no LISTEN (the worker polls
for cancellations and work), no session-level advisory lock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store.db import behind_pgbouncer, listen_available
from tests import pgbouncer as bouncer
from tests.engine.conftest import FAST, workflow
from tests.helpers import PG_SKIP_REASON, PG_URL, make_runtime, postgres_database, wait_until

pytestmark = [pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON),
              pytest.mark.skipif(not bouncer.available(), reason=bouncer.SKIP_REASON)]


@pytest.fixture
def bounced_url() -> Iterator[str]:
    with postgres_database() as direct, bouncer.pgbouncer(direct, pool_size=2) as through:
        yield through


def _runtime(tmp_path: Path, url: str, **settings: object) -> Runtime:
    # the default lease (heartbeat every 10 s) and poll interval: only polling can make the timings below
    return make_runtime(tmp_path / "data", url, **{**FAST, "lease_seconds": 30, "poll_interval": 1.0, **settings})


def _count_claims(rt: Runtime) -> list[float]:
    """When the runtime's engine sends each job claim from now on."""
    seen: list[float] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE media_queue SET") and "picked_up_at" in statement:
            seen.append(time.monotonic())

    sa.event.listen(rt.engine, "before_cursor_execute", on_execute)
    return seen


@pytest.mark.parametrize("how", ["setting", "url"])
def test_worker_and_submissions_through_pgbouncer_complete_jobs(bounced_url: str, tmp_path: Path, how: str) -> None:
    # MEDIAMILL_DB_PGBOUNCER=1, or ?pgbouncer=true in the URL: the same engine either way
    url = bounced_url + ("?pgbouncer=true" if how == "url" else "")
    rt = _runtime(tmp_path, url, **({"db_pgbouncer": True} if how == "setting" else {}))  # migrates through it
    try:
        assert behind_pgbouncer(rt.engine) and not listen_available(rt.engine)
        workflow(rt, "WF-BOUNCE", [{"name": "a", "action": "noop"},
                                   {"name": "b", "action": "sleep", "params": {"seconds": 0.1}}])
        src = tmp_path / "in.txt"
        src.write_text("through the bouncer\n")
        w = Worker(rt, pools={"*": 2}).start()
        try:
            assert "mm-listener" not in {t.name for t in w._threads}  # no LISTEN: it would hear nothing
            # idle, it polls every poll_interval (1 s); a deaf LISTEN would make it wait a lease (30 s)
            claims = _count_claims(rt)
            wait_until(lambda: len(claims) >= 3, timeout=10, message="three idle claims")
            first = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, src),
                                                        workflow_code="WF-BOUNCE")).id
            submitted = time.monotonic()
            wait_until(lambda: ops.get_job(rt.engine, first)["status"] == "completed", timeout=60)
            assert time.monotonic() - submitted < 10
            # every statement the worker and the submitter use runs far more than five times
            ids = [submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, src),
                                                       workflow_code="WF-BOUNCE")).id for _ in range(15)]
            wait_until(lambda: all(ops.get_job(rt.engine, i)["status"] == "completed" for i in ids), timeout=120,
                       interval=0.2, message="15 jobs completed through PgBouncer")
            for i in ids:
                d = ops.get_job(rt.engine, i)
                assert [s["status"] for s in d["steps"]] == ["completed", "completed"]
        finally:
            w.stop(grace=2)
    finally:
        rt.close()


def test_cancellation_through_pgbouncer_is_polled(bounced_url: str, tmp_path: Path) -> None:
    rt = _runtime(tmp_path, bounced_url, db_pgbouncer=True)
    try:
        workflow(rt, "WF-BOUNCE-LONG", [{"name": "nap", "action": "sleep", "params": {"seconds": 60}}])
        src = tmp_path / "in.txt"
        src.write_text("x")
        job = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, src),
                                                  workflow_code="WF-BOUNCE-LONG"))
        w = Worker(rt, pools={"*": 1}).start()
        try:
            wait_until(lambda: job.id in w.running and ops.get_job(rt.engine, job.id)["status"] == "processing",
                       timeout=60)
            started = time.monotonic()
            assert ops.cancel_job(rt.engine, job.id, by="test") == "cancelling"
            wait_until(lambda: ops.get_job(rt.engine, job.id)["status"] == "cancelled", timeout=15)
            assert time.monotonic() - started < 4  # the poll every second (the heartbeat looks every 10 s)
        finally:
            w.stop(grace=1)
    finally:
        rt.close()


def test_concurrent_migrations_through_pgbouncer(bounced_url: str, tmp_path: Path) -> None:
    """Migrations hold a transaction-level lock in the transaction that migrates: right through PgBouncer,
    where a session-level lock would be taken on one server session and released on another."""
    import threading

    from mediamill.store.db import code_head, create_db_engine, current_revision, upgrade

    url = bounced_url + "?pgbouncer=true"
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            upgrade(url)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    engine = create_db_engine(url)
    try:
        assert current_revision(engine) == code_head()
    finally:
        engine.dispose()
