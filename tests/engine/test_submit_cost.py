"""What one group commit of submits costs the database: a batch of jobs of one stored input and one workflow
runs a fixed number of statements whatever its size, and its jobs get their ids in the batch's order."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mediamill.engine import submit
from mediamill.engine.submit import JobInput, SubmitRequest, new_job_code, store_input_file, submit_many
from mediamill.runtime import Runtime
from mediamill.store import bulk, submit_repo
from mediamill.store.tables import job_events, media_queue, workflow_jobs
from tests.engine.conftest import workflow


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _batch(rt: Runtime, input_file: Path, n: int) -> list[SubmitRequest]:
    stored = store_input_file(rt.storage, input_file)
    first = submit_many(rt.engine, [SubmitRequest(job_input=stored, workflow_code="WF-COST")])[0]
    assert first.id > 0
    # later submits reuse the stored object (as JSON submits of one upload do)
    reused = JobInput(storage_key=stored.storage_key, filename=stored.filename, mime=stored.mime,
                      size=stored.size, checksum=stored.checksum, reused=True)
    return [SubmitRequest(job_input=reused, workflow_code="WF-COST", metadata={"n": i}) for i in range(n)]


def _job_statements(seen: list[str]) -> list[str]:
    return [s for s in seen if not re.match(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)", s, re.I)
            and "pg_advisory_xact_lock" not in s]


def test_a_batch_costs_the_same_statements_whatever_its_size(rt: Runtime, input_file: Path) -> None:
    workflow(rt, "WF-COST", [{"name": "a", "action": "noop"}])
    # PostgreSQL switches to COPY (which the statement hook does not see) from bulk.COPY_MIN_ROWS rows on:
    # both batches stay below it, so the count compares like with like
    many = bulk.COPY_MIN_ROWS - 1
    small, large = _batch(rt, input_file, 2), _batch(rt, input_file, many)
    with statements(rt.engine) as seen:
        submit_many(rt.engine, small)
    with_two = len(_job_statements(seen))
    with statements(rt.engine) as seen:
        jobs = submit_many(rt.engine, large)
    with_forty = len(_job_statements(seen))
    assert len(jobs) == many
    # the input's references and the workflow's head are read once per batch, the jobs inserted in one statement
    assert with_forty == with_two, (with_two, with_forty, _job_statements(seen))


def test_a_batch_s_jobs_get_ids_in_its_order(rt: Runtime, input_file: Path) -> None:
    workflow(rt, "WF-COST", [{"name": "a", "action": "noop"}])
    jobs = submit_many(rt.engine, _batch(rt, input_file, 30))
    ids = [j.id for j in jobs]
    assert ids == sorted(ids) and len(set(ids)) == 30
    with rt.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(workflow_jobs.c.id, workflow_jobs.c.job_metadata)
                                 .where(workflow_jobs.c.id.in_(ids))).all())
    assert [rows[i]["n"] for i in ids] == list(range(30))  # each answer names its own request's job
    assert len({j.job_code for j in jobs}) == 30


def test_a_forked_process_never_takes_its_parents_spare_job_codes() -> None:
    """Single submits take their codes' random parts from a spare pool: a child forked with the pool filled must
    not hand out the codes its parent hands out next (a worker's children, a forking server)."""
    from mediamill.engine import submit

    new_job_code()  # the pool filled
    assert len(submit._spare_codes) > 0
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next code, to the parent
        try:
            os.write(write, new_job_code().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    mine = [new_job_code() for _ in range(len(submit._spare_codes) + 1)]
    assert re.fullmatch(r"JOB-\d{8}-[0-9A-HJKMNP-TV-Z]{8}", child) and child not in mine


def test_job_codes_are_eight_random_base32_characters() -> None:
    codes = {new_job_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(re.fullmatch(r"JOB-\d{8}-[0-9A-HJKMNP-TV-Z]{8}", c) for c in codes)
    # every character of the alphabet turns up in every position (no position stuck or skewed to a few)
    for pos in range(8):
        assert len({c[-8 + pos] for c in codes}) == 32


def test_a_batch_gives_each_job_its_entry_and_event_in_its_order(rt: Runtime, input_file: Path) -> None:
    """A batch of two workflows (on PostgreSQL the entries and events made by the server): every job queued once
    with its own first event, entries and events in the batch's order, each answer its own request's job."""
    workflow(rt, "WF-COST", [{"name": "a", "action": "noop"}])
    workflow(rt, "WF-OTHER", [{"name": "a", "action": "noop"}], queue="other", priority=7)
    n = 217
    reqs = _batch(rt, input_file, n)
    for k in range(0, n, 3):
        reqs[k] = dataclasses.replace(reqs[k], workflow_code="WF-OTHER", request_id=f"req-{k}")
    jobs = submit_many(rt.engine, reqs)
    ids = [j.id for j in jobs]
    assert ids == sorted(ids) and len(set(ids)) == n
    assert [j.workflow_code for j in jobs] == [r.workflow_code for r in reqs]
    with rt.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(sa.select(workflow_jobs).where(workflow_jobs.c.id.in_(ids)))}
        entries = conn.execute(sa.select(media_queue.c.job_id, media_queue.c.queue_name, media_queue.c.priority,
                                         media_queue.c.base_priority, media_queue.c.status)
                               .where(media_queue.c.job_id.in_(ids)).order_by(media_queue.c.id)).all()
        events = conn.execute(sa.select(job_events.c.job_id, job_events.c.event_type, job_events.c.data,
                                        job_events.c.created_at, job_events.c.tenant_id)
                              .where(job_events.c.job_id.in_(ids)).order_by(job_events.c.id)).all()
    assert [rows[i].job_metadata["n"] for i in ids] == list(range(n))
    assert [e.job_id for e in entries] == ids and [e.job_id for e in events] == ids
    for job, req, entry, ev in zip(jobs, reqs, entries, events, strict=True):
        row = rows[job.id]
        other = req.workflow_code == "WF-OTHER"
        assert (row.status, row.queue_name, row.priority) == ("queued", "other" if other else "q", 7 if other else 5)
        assert tuple(entry)[1:] == (row.queue_name, row.priority, row.priority, "queued")
        assert (ev.event_type, ev.tenant_id, ev.created_at) == ("status", "default", row.submitted_at)
        assert ev.data == {"status": "queued", "workflow": req.workflow_code, "version": 1,
                           "queue": row.queue_name, "priority": row.priority, "request_id": req.request_id}
        assert ev.data == submit_repo.status_event(row._asdict(), req.workflow_code)


def test_a_batch_with_one_refused_job_leaves_nothing(rt: Runtime, input_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """All or none: a job code already taken, the batch's last, fails the whole batch (as SQLAlchemy's
    IntegrityError) and writes none of its jobs, entries or events; the next batch goes in."""
    workflow(rt, "WF-COST", [{"name": "a", "action": "noop"}])
    taken = submit_many(rt.engine, _batch(rt, input_file, 1))[0].job_code
    n = 205
    batch = _batch(rt, input_file, n)
    with rt.engine.connect() as conn:
        before = [conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                  for t in (workflow_jobs, media_queue, job_events)]
    real = submit.new_job_codes
    monkeypatch.setattr(submit, "new_job_codes", lambda k, now=None: [*real(k - 1, now), taken])
    with pytest.raises(sa.exc.IntegrityError):
        submit_many(rt.engine, batch)
    with rt.engine.connect() as conn:
        after = [conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                 for t in (workflow_jobs, media_queue, job_events)]
    assert after == before
    monkeypatch.setattr(submit, "new_job_codes", real)
    assert len(submit_many(rt.engine, _batch(rt, input_file, n))) == n
