"""A single submit on PostgreSQL is one statement on an autocommit connection (the job, its queue entry, its
status event and the wake-up), assuming what the last general submit of that workflow and tenant read; every
change that makes the assumption wrong — a new version, a deactivation, a rollout, a taken Idempotency-Key, a
database recreated with the same ids — is seen by the statement itself, which then writes nothing, and the
general path decides."""

from __future__ import annotations

import contextlib
import select
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from mediamill.engine import rollouts
from mediamill.engine.submit import SubmitRequest, SubmittedJob, store_input_file, submit_job, submit_many
from mediamill.errors import Conflict
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from tests.engine.conftest import workflow


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What this process sends PostgreSQL through psycopg (SQLAlchemy's statements and raw ones; a commit
    is listed as COMMIT)."""
    seen: list[str] = []
    execute, commit = psycopg.Cursor.execute, psycopg.Connection.commit

    def counted_execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kw: Any) -> Any:
        seen.append(str(query))
        return execute(self, query, *args, **kw)

    def counted_commit(self: psycopg.Connection[Any]) -> None:
        seen.append("COMMIT")
        commit(self)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted_execute)
    monkeypatch.setattr(psycopg.Connection, "commit", counted_commit)
    return seen


def _submit(rt: Runtime, input_file: Path, code: str = "WF-ONE", **kw: Any) -> SubmittedJob:
    return submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, input_file),
                                               workflow_code=code, **kw))


def _codes_first(monkeypatch: pytest.MonkeyPatch, codes: list[str]) -> None:
    """The next submit's job codes are ``codes``; the ones after, new ones as usual."""
    from mediamill.engine import submit

    pending, real = iter([codes]), submit.new_job_codes
    monkeypatch.setattr(submit, "new_job_codes", lambda n, now=None: next(pending, None) or real(n, now))


def _job(rt: Runtime, job_id: int) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        job = dict(conn.execute(sa.text("SELECT * FROM workflow_jobs WHERE id = :i"), {"i": job_id}).mappings().one())
        job["entries"] = conn.execute(sa.text("SELECT queue_name, priority, base_priority, status, attempts "
                                              "FROM media_queue WHERE job_id = :i"), {"i": job_id}).all()
        job["events"] = conn.execute(sa.text("SELECT event_type, data FROM job_events WHERE job_id = :i"),
                                     {"i": job_id}).all()
    return job


def test_a_known_workflow_s_submit_is_one_statement_that_writes_everything(
        pg_rt: Runtime, input_file: Path, statements: list[str]) -> None:
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}], queue="one", priority=7)
    first = _submit(pg_rt, input_file)  # the general path: it reads the head and rollouts
    listener = psycopg.connect(pg_rt.settings.effective_database_url.replace("+psycopg", ""), autocommit=True)
    listener.execute("LISTEN mediamill_jobs")
    statements.clear()
    job = _submit(pg_rt, input_file, metadata={"k": 1}, request_id="req-1")
    assert len(statements) == 1 and statements[0].startswith("WITH job AS"), statements  # no reads, no COMMIT
    assert job.id > first.id and job.status == "queued" and job.queue_name == "one" and job.priority == 7
    row = _job(pg_rt, job.id)
    assert (row["status"], row["queue_name"], row["priority"], row["workflow_version"]) == ("queued", "one", 7, 1)
    assert row["job_metadata"] == {"k": 1} and row["request_id"] == "req-1" and row["job_code"] == job.job_code
    assert row["entries"] == [("one", 7, 7, "queued", 0)]
    assert [(kind, data["status"], data["request_id"]) for kind, data in row["events"]] == [
        ("status", "queued", "req-1")]
    # the wake-up went out with the commit
    deadline = time.monotonic() + 5
    while not (got := list(listener.notifies(timeout=0.1, stop_after=1))) and time.monotonic() < deadline:
        select.select([listener.fileno()], [], [], 0.1)
    assert got and got[0].channel == "mediamill_jobs" and got[0].payload == "one"
    listener.close()


def test_a_new_version_or_a_deactivation_is_seen_by_the_next_submit(pg_rt: Runtime, input_file: Path) -> None:
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}], queue="one")
    _submit(pg_rt, input_file)
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}, {"name": "b", "action": "noop"}], queue="two")
    job = _submit(pg_rt, input_file)
    assert (job.workflow_version, job.queue_name) == (2, "two")
    assert _job(pg_rt, job.id)["entries"][0][0] == "two"
    assert (_submit(pg_rt, input_file).workflow_version) == 2  # and the next one is one statement again
    with pg_rt.engine.begin() as conn:
        workflow_repo.set_active(conn, "WF-ONE", False)
    with pytest.raises(Conflict, match="deactivated"):
        _submit(pg_rt, input_file)
    with pg_rt.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM workflow_jobs")).scalar() == 3


def test_an_active_rollout_is_never_skipped(pg_rt: Runtime, input_file: Path, statements: list[str]) -> None:
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}], queue="one")
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}, {"name": "b", "action": "noop"}], queue="two")
    with pg_rt.engine.begin() as conn:
        workflow_repo.activate_version(conn, "WF-ONE", 1)
    _submit(pg_rt, input_file)  # known: version 1, no rollout
    rollouts.start(pg_rt.engine, "WF-ONE", kind="canary", version=2, percent=100, tenant_id="default", by="t")
    jobs = [_submit(pg_rt, input_file) for _ in range(3)]
    assert [(j.workflow_version, j.queue_name) for j in jobs] == [(2, "two")] * 3  # all diverted to the candidate
    rollouts.stop(pg_rt.engine, "WF-ONE", kind="canary", tenant_id="default", by="t")
    _submit(pg_rt, input_file)  # the general path sees the rollout ended ...
    statements.clear()
    assert _submit(pg_rt, input_file).workflow_version == 1
    assert len(statements) == 1  # ... and the next submit is one statement again


def test_an_idempotency_key_replays_its_job(pg_rt: Runtime, input_file: Path, statements: list[str]) -> None:
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}])
    _submit(pg_rt, input_file)
    first = _submit(pg_rt, input_file, idempotency_key="k-1", idempotency_hash="h")
    statements.clear()
    again = _submit(pg_rt, input_file, idempotency_key="k-1", idempotency_hash="h")
    assert not first.replayed and again.replayed and again.id == first.id
    # the retry's one statement meets the key and writes nothing, without an error (none in the server's log)
    assert "ON CONFLICT DO NOTHING" in statements[0]
    with pytest.raises(Conflict, match="different request body"):
        _submit(pg_rt, input_file, idempotency_key="k-1", idempotency_hash="other")
    with pg_rt.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM workflow_jobs WHERE idempotency_key = 'k-1'")).scalar() == 1


def test_a_taken_job_code_falls_back_to_the_general_path_on_a_kept_connection(
        pg_rt: Runtime, input_file: Path, monkeypatch: pytest.MonkeyPatch, statements: list[str]) -> None:
    """The statement fails on the unique job code (no ``ON CONFLICT``): nothing of it is written, the submit
    succeeds the general way with a new code, and the lane keeps its connection (the error took only its own
    transaction)."""
    from mediamill.store import db

    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}])
    first = _submit(pg_rt, input_file)
    _submit(pg_rt, input_file)  # (known: the next one takes one statement)
    [(kept, _used)] = db._lane(pg_rt.engine).idle
    _codes_first(monkeypatch, [first.job_code])  # the one statement's code is taken; the general path's is new
    statements.clear()
    job = _submit(pg_rt, input_file)
    assert "ON CONFLICT" not in statements[0] and len(statements) > 1  # the one statement failed: then the rest
    assert job.job_code != first.job_code and _job(pg_rt, job.id)["status"] == "queued"
    with pg_rt.engine.connect() as conn:
        counts = conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM workflow_jobs), (SELECT count(*) FROM media_queue), "
            "(SELECT count(*) FROM job_events WHERE event_type = 'status')")).one()
    assert tuple(counts) == (3, 3, 3)  # one row of each a job: the failed statement left nothing
    assert [cur for cur, _used in db._lane(pg_rt.engine).idle] == [kept] and not kept.connection.closed


def test_a_recreated_database_with_the_same_ids_is_not_mistaken_for_the_old_one(
        pg_rt: Runtime, input_file: Path) -> None:
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}], queue="one")
    _submit(pg_rt, input_file)
    with pg_rt.engine.begin() as conn:  # what a restore of another database's backup looks like to this process
        conn.execute(sa.text("TRUNCATE workflow_definitions, workflow_versions, workflow_steps, workflow_jobs, "
                             "media_queue, job_events RESTART IDENTITY CASCADE"))
    workflow(pg_rt, "WF-ONE", [{"name": "other", "action": "noop"}], queue="elsewhere")
    job = _submit(pg_rt, input_file)  # the same workflow id and version 1, another definition
    assert (job.workflow_version, job.queue_name) == (1, "elsewhere")
    assert _job(pg_rt, job.id)["entries"][0][0] == "elsewhere"


def test_its_connection_stays_out_of_the_pool_whose_transactions_stay_transactions(pg_rt: Runtime,
                                                                                   input_file: Path) -> None:
    from mediamill.store import db

    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}])
    _submit(pg_rt, input_file)
    _submit(pg_rt, input_file)  # one statement, on an autocommit connection of the engine's lane
    lane = db._lane(pg_rt.engine)
    [(kept, _used)] = lane.idle
    assert kept.connection.autocommit and pg_rt.engine.pool.checkedout() == 0
    _submit(pg_rt, input_file)
    assert [cur for cur, _used in lane.idle] == [kept]  # the same one again: no checkout, no switches
    with pytest.raises(RuntimeError), pg_rt.engine.begin() as conn:  # the pool's connections: transactions
        assert conn.connection.driver_connection is not kept.connection
        conn.execute(sa.text("UPDATE workflow_jobs SET priority = 99"))
        raise RuntimeError("roll back")
    with pg_rt.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM workflow_jobs WHERE priority = 99")).scalar() == 0
    pg_rt.engine.dispose()  # the lane's sessions end with the pool's
    assert kept.connection.closed and lane.idle == []


def test_a_lane_connection_unused_for_a_while_is_pinged_and_replaced_when_gone(pg_rt: Runtime,
                                                                              input_file: Path) -> None:
    from mediamill.store import db

    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}])
    _submit(pg_rt, input_file)
    _submit(pg_rt, input_file)
    lane = db._lane(pg_rt.engine)
    [(kept, used)] = lane.idle
    lane.idle = [(kept, used - db.PING_AFTER_IDLE_SECONDS - 1)]  # (as if unused that long)
    _submit(pg_rt, input_file)
    assert [cur for cur, _used in lane.idle] == [kept] and not kept.connection.closed  # it answered: no churn
    pid = kept.connection.info.backend_pid
    with psycopg.connect(pg_rt.settings.effective_database_url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # the server ends it while it waits
    lane.idle = [(kept, time.monotonic() - db.PING_AFTER_IDLE_SECONDS - 1)]
    job = _submit(pg_rt, input_file)  # pinged, found gone, replaced: the submit does not fail
    assert _job(pg_rt, job.id)["status"] == "queued" and kept.connection.closed and lane.open == 1


def test_the_lane_is_capped_and_shrinks(pg_rt: Runtime, input_file: Path) -> None:
    """At most the pool's size of lane connections, idle or in use; beyond, the pool's way (given back out of
    autocommit); the oldest idle one goes once it sat unused long enough and another is at hand."""
    from mediamill.store import db

    lane = db._lane(pg_rt.engine)
    lane.size = 2
    with db.autocommit(pg_rt.engine) as a, db.autocommit(pg_rt.engine) as b, db.autocommit(pg_rt.engine) as c:
        assert all(cur.connection.autocommit for cur in (a, b, c)) and lane.open == 2
        assert pg_rt.engine.pool.checkedout() == 1  # the third: the pool's
    assert not c.connection.autocommit and {id(r) for r, _u in lane.idle} == {id(a), id(b)}
    oldest = lane.idle[0][0]
    lane.idle[0] = (oldest, time.monotonic() - db.PING_AFTER_IDLE_SECONDS - 1)
    with db.autocommit(pg_rt.engine) as d:
        assert d.execute("SELECT 1").fetchone() == (1,)
    assert oldest.connection.closed and lane.open == 1 and len(lane.idle) == 1


def test_a_lost_session_is_an_sqlalchemy_error_and_the_next_submit_reconnects(pg_rt: Runtime, input_file: Path) -> None:
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}])
    _submit(pg_rt, input_file)
    _submit(pg_rt, input_file)
    with psycopg.connect(pg_rt.settings.effective_database_url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    with pytest.raises(sa.exc.OperationalError):  # what the API answers 503 for
        _submit(pg_rt, input_file)
    job = _submit(pg_rt, input_file)  # the pool was renewed: no second failure
    assert _job(pg_rt, job.id)["status"] == "queued"


def test_a_connection_pinged_after_sitting_idle_takes_the_statement(pg_rt: Runtime, input_file: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool pings a connection that sat idle (``SELECT 1``, which opens a transaction): the statement's
    connection is then in a transaction, which must end before it can switch to autocommit."""
    from mediamill.store import db

    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}])
    _submit(pg_rt, input_file)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every checkout pings
    jobs = [_submit(pg_rt, input_file) for _ in range(3)]
    assert [_job(pg_rt, j.id)["status"] for j in jobs] == ["queued"] * 3


def test_the_times_are_stamped_as_the_statement_goes_out(pg_rt: Runtime, input_file: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's wait counts from when the database was asked, not from when the submit began building its row:
    the job's submitted_at and updated_at, its entry's and its event's times are one, taken after the
    connection was in hand."""
    from mediamill.store import submit_repo
    from mediamill.store.timeutil import utcnow

    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}], queue="one")
    _submit(pg_rt, input_file)
    checked_out: list[Any] = []
    real = submit_repo.autocommit

    @contextlib.contextmanager
    def late(engine: Any) -> Any:
        with real(engine) as raw:
            checked_out.append(utcnow())  # what came before the checkout is not the job's wait
            yield raw

    monkeypatch.setattr(submit_repo, "autocommit", late)
    job = _submit(pg_rt, input_file)
    assert checked_out, "the one-statement path was not taken"
    with pg_rt.engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT j.submitted_at, j.updated_at, q.created_at, q.scheduled_time, e.created_at FROM workflow_jobs j "
            "JOIN media_queue q ON q.job_id = j.id JOIN job_events e ON e.job_id = j.id WHERE j.id = :i"),
            {"i": job.id}).one()
    assert len(set(row)) == 1, row
    assert row[0] >= checked_out[0], (row[0], checked_out[0])


# ------------------------------------------------------------------------------ batches
def _reqs(rt: Runtime, input_file: Path, n: int, code: str = "WF-ONE", **kw: Any) -> list[SubmitRequest]:
    inp = store_input_file(rt.storage, input_file)
    return [SubmitRequest(job_input=inp, workflow_code=code, **kw) for _ in range(n)]


def test_a_known_workflow_s_batch_is_one_statement_in_the_given_order(
        pg_rt: Runtime, input_file: Path, statements: list[str]) -> None:
    """Jobs, entries and events of the whole batch in one statement (its own transaction: no BEGIN, no COMMIT),
    in the order given: ids, queue entries and events ascending as the requests were; each job's own values."""
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}], queue="one", priority=7)
    submit_many(pg_rt.engine, _reqs(pg_rt, input_file, 2))  # the general path: it reads the head and rollouts
    listener = psycopg.connect(pg_rt.settings.effective_database_url.replace("+psycopg", ""), autocommit=True)
    listener.execute("LISTEN mediamill_jobs")
    reqs = _reqs(pg_rt, input_file, 40)
    for k, req in enumerate(reqs):
        req.request_id, req.metadata, req.priority = f"req-{k}", {"k": k}, (k % 3) or None
    statements.clear()
    jobs = submit_many(pg_rt.engine, reqs)
    assert len(statements) == 1 and statements[0].startswith("WITH job AS"), statements
    assert [j.id for j in jobs] == sorted(j.id for j in jobs) and len({j.job_code for j in jobs}) == 40
    for k, job in enumerate(jobs):
        row = _job(pg_rt, job.id)
        prio = (k % 3) or 7
        assert (job.priority, row["priority"], row["request_id"], row["job_metadata"]) == (prio, prio, f"req-{k}",
                                                                                          {"k": k})
        assert (row["job_code"], row["status"], row["queue_name"]) == (job.job_code, "queued", "one")
        assert row["entries"] == [("one", prio, prio, "queued", 0)]
        assert [(kind, data["status"], data["request_id"], data["workflow"]) for kind, data in row["events"]] == [
            ("status", "queued", f"req-{k}", "WF-ONE")]
    with pg_rt.engine.connect() as conn:  # entries and events went in in the jobs' order
        for table in ("media_queue", "job_events"):
            order = conn.execute(sa.text(f"SELECT job_id FROM {table} WHERE job_id >= :i ORDER BY id"),
                                 {"i": jobs[0].id}).scalars().all()
            assert order == [j.id for j in jobs]
    got = list(listener.notifies(timeout=2, stop_after=1))
    assert got and got[0].payload == "one"
    listener.close()


def test_a_batch_that_meets_a_rollout_or_a_taken_code_is_submitted_the_general_way(
        pg_rt: Runtime, input_file: Path, monkeypatch: pytest.MonkeyPatch, statements: list[str]) -> None:
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}], queue="one")
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}, {"name": "b", "action": "noop"}], queue="two")
    with pg_rt.engine.begin() as conn:
        workflow_repo.activate_version(conn, "WF-ONE", 1)
    first = submit_many(pg_rt.engine, _reqs(pg_rt, input_file, 3))  # known: version 1, no rollout
    rollouts.start(pg_rt.engine, "WF-ONE", kind="canary", version=2, percent=100, tenant_id="default", by="t")
    statements.clear()
    jobs = submit_many(pg_rt.engine, _reqs(pg_rt, input_file, 5))
    assert statements[0].startswith("WITH job AS") and len(statements) > 1  # the statement saw the rollout
    assert [(j.workflow_version, j.queue_name) for j in jobs] == [(2, "two")] * 5  # all diverted
    rollouts.stop(pg_rt.engine, "WF-ONE", kind="canary", tenant_id="default", by="t")
    submit_many(pg_rt.engine, _reqs(pg_rt, input_file, 2))  # the general path sees the rollout ended
    # a code of the batch is taken (1 in 2^40 a day): the statement writes nothing, the general path all of it
    _codes_first(monkeypatch, [first[0].job_code, "JOB-FRESH-1", "JOB-FRESH-2"])
    statements.clear()
    again = submit_many(pg_rt.engine, _reqs(pg_rt, input_file, 3))
    assert statements[0].startswith("WITH job AS") and len(statements) > 1
    assert first[0].job_code not in {j.job_code for j in again} and [j.workflow_version for j in again] == [1] * 3
    with pg_rt.engine.connect() as conn:
        counts = conn.execute(sa.text(
            "SELECT (SELECT count(*) FROM workflow_jobs), (SELECT count(*) FROM media_queue), "
            "(SELECT count(*) FROM job_events WHERE event_type = 'status')")).one()
    assert tuple(counts) == (13, 13, 13)  # one row of each a job: the failed statements left nothing


def test_a_batch_of_two_tenants_or_workflows_takes_the_general_path(
        pg_rt: Runtime, input_file: Path, statements: list[str]) -> None:
    workflow(pg_rt, "WF-ONE", [{"name": "a", "action": "noop"}], queue="one")
    workflow(pg_rt, "WF-TWO", [{"name": "a", "action": "noop"}], queue="two")
    submit_many(pg_rt.engine, _reqs(pg_rt, input_file, 1) + _reqs(pg_rt, input_file, 1, code="WF-TWO"))
    statements.clear()
    jobs = submit_many(pg_rt.engine, _reqs(pg_rt, input_file, 2) + _reqs(pg_rt, input_file, 2, code="WF-TWO"))
    assert "COMMIT" in statements and [j.queue_name for j in jobs] == ["one", "one", "two", "two"]
    statements.clear()
    assert len(submit_many(pg_rt.engine, _reqs(pg_rt, input_file, 2, code="WF-TWO"))) == 2
    assert statements == [statements[0]]  # (each workflow alone: one statement)
