"""What one group commit of submits costs the database: a batch of jobs of one stored input and one workflow
runs a fixed number of statements whatever its size, and its jobs get their ids in the batch's order."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from mediamill.engine.submit import JobInput, SubmitRequest, new_job_code, store_input_file, submit_many
from mediamill.runtime import Runtime
from mediamill.store import bulk
from mediamill.store.tables import workflow_jobs
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


def test_job_codes_are_eight_random_base32_characters() -> None:
    codes = {new_job_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(re.fullmatch(r"JOB-\d{8}-[0-9A-HJKMNP-TV-Z]{8}", c) for c in codes)
    # every character of the alphabet turns up in every position (no position stuck or skewed to a few)
    for pos in range(8):
        assert len({c[-8 + pos] for c in codes}) == 32
