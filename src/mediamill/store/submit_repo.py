"""The rows a submit writes: its jobs and their queue entries (with their first ``status`` events, for jobs queued
the usual way: :func:`insert_queued_jobs`, and in a statement of their own, checked against what the caller
assumed, :func:`insert_queued_job` and :func:`insert_queued_batch`), a canary's move of a job to the candidate
version, and the job an Idempotency-Key already created. (The events of routed, held and shadow jobs go through
``store.lifecycle.add_events``, as every other job event does.)

What is submitted — the workflow version, routing, the rollout's pick, a job's first status and queue —
is decided in ``engine/submit.py``, which builds the rows; this module only reads and writes them, in the
caller's transaction (the one-statement inserts: in their own). On PostgreSQL a batch of queued jobs is one
statement (``store.bulk``'s ``INSERT … SELECT FROM unnest``, its entries and events made by the server); other
batch inserts are ``store.bulk``'s too (a binary COPY, or ``unnest`` when ids come back; executemany elsewhere), so
a group commit of any size costs the same statements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from mediamill.store import jsontext
from mediamill.store.bulk import insert_many, insert_many_returning_ids, unnest_insert, unnest_insert_columns
from mediamill.store.db import autocommit
from mediamill.store.lifecycle import add_events
from mediamill.store.tables import media_queue, workflow_jobs
from mediamill.store.timeutil import utcnow

#: A row a constraint refused. A submit with an Idempotency-Key that meets one lost the race to a
#: concurrent submit with the same key (the unique ``(tenant_id, idempotency_key)``): it replays that job.
CONSTRAINT_ERRORS: tuple[type[Exception], ...] = (sa_exc.IntegrityError,)


def job_by_idempotency_key(conn: Connection, tenant_id: str, key: str) -> dict[str, Any] | None:
    """The tenant's job created with this Idempotency-Key (every ``workflow_jobs`` column), or None."""
    row = conn.execute(sa.select(workflow_jobs).where(workflow_jobs.c.tenant_id == tenant_id,
                                                      workflow_jobs.c.idempotency_key == key)).mappings().first()
    return None if row is None else dict(row)


def insert_jobs(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert ``workflow_jobs`` rows (dicts of column → value) in one statement; their new ids, in the
    rows' order."""
    return insert_many_returning_ids(conn, workflow_jobs, rows)


def move_to_version(conn: Connection, job_id: int, *, version: int, queue: str) -> None:
    """Point a just-inserted job at another version of its workflow and that version's queue."""
    conn.execute(workflow_jobs.update().where(workflow_jobs.c.id == job_id)
                 .values(workflow_version=version, queue_name=queue))


def enqueue_jobs(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``media_queue`` entries (dicts of column → value; a missing key is NULL, not the default)."""
    insert_many(conn, media_queue, rows)


def queue_entry(job_id: int, job: dict[str, Any]) -> dict[str, Any]:
    """The ``media_queue`` entry of a just-inserted job (its ``workflow_jobs`` row): waiting since its submit. A
    shadow run's has no base priority, so aging never lifts it to the level of real work."""
    return {"job_id": job_id, "queue_name": job["queue_name"], "priority": job["priority"],
            "base_priority": None if job.get("shadow_of") else job["priority"], "scheduled_time": job["submitted_at"],
            "status": "queued", "created_at": job["submitted_at"], "attempts": 0}


#: The data of a job's first ``status`` event: each key and the ``workflow_jobs`` column it comes from (None: the
#: workflow's code). :func:`status_event` makes it in Python, :func:`insert_queued_jobs` in the server.
_STATUS_EVENT = (("status", "status"), ("workflow", None), ("version", "workflow_version"), ("queue", "queue_name"),
                 ("priority", "priority"), ("request_id", "request_id"))


def status_event(job: dict[str, Any], workflow_code: str) -> dict[str, Any]:
    """The data of a job's first ``status`` event, from its ``workflow_jobs`` row and its workflow's code."""
    return {key: workflow_code if column is None else job[column] for key, column in _STATUS_EVENT}


_QUEUED_RETURNING = ("id", "workflow_id", "tenant_id", "status", "workflow_version", "queue_name", "priority",
                     "request_id", "submitted_at")


def _status_event_sql(workflow_code: str) -> str:
    """:func:`status_event` as SQL, of the columns of a CTE ``job`` and the SQL of the workflow's code."""
    return "json_build_object(" + ", ".join(
        f"'{key}', {workflow_code if column is None else f'job.{column}'}" for key, column in _STATUS_EVENT) + ")"


# each job's entry and event go in in the jobs' order (ids come from one sequence in the insert's order, which is
# the rows'): a batch's jobs wait, and their events stream, in the order they were given
_ENTRIES_AND_EVENTS = (
    " entry AS (INSERT INTO media_queue (job_id, queue_name, priority, base_priority, scheduled_time, status,"
    "  created_at, attempts) SELECT id, queue_name, priority, priority, submitted_at, 'queued', submitted_at, 0"
    "  FROM job ORDER BY id),"
    " event AS (INSERT INTO job_events (job_id, tenant_id, event_type, created_at, data)"
    f"  SELECT job.id, job.tenant_id, 'status', job.submitted_at, {_status_event_sql('w.code')} FROM job"
    "  JOIN unnest(%s::integer[], %s::text[]) AS w(id, code) ON w.id = job.workflow_id ORDER BY job.id),"
    # the new ids as one array (one value for the client to read, not a row a job)
    " ids AS (SELECT array_agg(id ORDER BY id) AS ids FROM job)")


def insert_queued_jobs(conn: Connection, rows: Sequence[dict[str, Any]],
                       workflow_codes: Mapping[int, str]) -> list[int]:
    """Jobs queued on their workflows' current versions (``workflow_jobs`` rows; none a shadow run), each with its
    queue entry and its first ``status`` event (:func:`status_event`; ``workflow_codes``: each workflow id's code);
    their new ids, in the rows' order.

    On PostgreSQL ONE statement: the entries and the events are made by the server from the rows the jobs' insert
    returns, so a batch costs the client the jobs' values alone (sending each event's JSON instead, as a text array
    joined back to its job, measured ≈ 11 µs a job more, client and server, than the server's building it)."""
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        ids = insert_jobs(conn, rows)
        enqueue_jobs(conn, [queue_entry(i, r) for i, r in zip(ids, rows, strict=True)])
        add_events(conn, [{"job_id": i, "tenant_id": r["tenant_id"], "event_type": "status",
                           "created_at": r["submitted_at"], "data": status_event(r, workflow_codes[r["workflow_id"]])}
                          for i, r in zip(ids, rows, strict=True)])
        return ids
    sql, params = unnest_insert(conn.dialect, workflow_jobs, rows, _QUEUED_RETURNING)
    wf_ids = list({r["workflow_id"] for r in rows})
    # ids come from one sequence in the insert's order, which ORDER BY _ord fixed to the rows' order
    return list(conn.exec_driver_sql(f"WITH job AS ({sql}),{_ENTRIES_AND_EVENTS} SELECT ids FROM ids",
                                     (*params, wf_ids, [workflow_codes[w] for w in wf_ids])).scalar_one())


def insert_queued_batch(engine: Engine, same: Mapping[str, Any], columns: Mapping[str, Sequence[Any]], *,
                        checksum: str, workflow_code: str, channel: str) -> list[int] | None:
    """:func:`insert_queued_jobs` for jobs of ONE workflow and ONE tenant (none a shadow run) in ONE statement on
    an autocommit connection (PostgreSQL): one round trip for the jobs, their entries, their events, the wake-up
    on ``channel`` and the commit, where the general path takes six (begin, the workflow's head, its rollouts, the
    statement, the wake-up, commit). The jobs' ``workflow_jobs`` rows come as columns: ``same``, the values every
    job has (its workflow, version, queue and tenant among them); ``columns``, each other column's values, one a
    job. Their new ids in the columns' order; or nothing, and None, when the statement's own check says the
    caller's facts are stale (as :func:`insert_queued_job`'s: the workflow's current version, its ``checksum``,
    active, no active rollout for the tenant) or a unique key is taken: the caller then submits the general way,
    which reads everything again and explains a refusal. All the jobs or none (the statement is its own
    transaction)."""
    workflow_id = same["workflow_id"]
    where = _facts_guard(workflow_id="%s", version="%s", checksum="%s", tenant_id="%s")
    sql, params = unnest_insert_columns(engine.dialect, workflow_jobs, same, columns, _QUEUED_RETURNING, where,
                                        (workflow_id, same["workflow_version"], checksum, workflow_id,
                                         same["tenant_id"]))
    try:
        with autocommit(engine) as cur:
            row = cur.execute(f"WITH job AS ({sql}),{_ENTRIES_AND_EVENTS} SELECT ids, pg_notify(%s, %s) FROM ids"
                              " WHERE ids IS NOT NULL",
                              (*params, [workflow_id], [workflow_code], channel, same["queue_name"])).fetchone()
    except CONSTRAINT_ERRORS:
        return None
    return None if row is None else list(row[0])


def _facts_guard(*, workflow_id: str, version: str, checksum: str, tenant_id: str) -> str:
    """The condition a one-statement submit inserts under, of the SQL (placeholders) of its facts: the workflow's
    current version is ``version`` with this ``checksum`` (a database restored or recreated can reuse ids), it is
    active, and no rollout of it is active for the tenant."""
    return (
        "EXISTS (SELECT 1 FROM workflow_definitions d JOIN workflow_versions v ON v.workflow_id = d.id"
        f"  AND v.version = d.current_version WHERE d.id = {workflow_id} AND d.current_version = {version}"
        f"  AND d.is_active AND v.checksum = {checksum})"
        f" AND NOT EXISTS (SELECT 1 FROM workflow_rollouts WHERE workflow_id = {workflow_id}"
        f"  AND tenant_id = {tenant_id} AND state = 'active')")


_JSON_COLUMNS = frozenset(c.name for c in workflow_jobs.c if isinstance(c.type, sa.JSON))


@lru_cache(maxsize=16)
def _one_job_statement(columns: tuple[str, ...], dialect: sa.Dialect, keyed: bool) -> str:
    def cast(name: str, column: sa.Column[Any]) -> str:
        kind = "json" if isinstance(column.type, sa.JSON) else column.type.compile(dialect=dialect)
        return f"CAST(%({name})s AS {kind})"

    jobs = ", ".join(cast(c, workflow_jobs.c[c]) for c in columns)
    at = cast("created_at", media_queue.c.created_at)
    return (
        "WITH job AS ("
        f" INSERT INTO workflow_jobs ({', '.join(columns)}) SELECT {jobs} WHERE "
        + _facts_guard(workflow_id="%(workflow_id)s", version="%(workflow_version)s",
                       checksum="%(definition_checksum)s", tenant_id="%(tenant_id)s") +
        f"{' ON CONFLICT DO NOTHING' if keyed else ''} RETURNING id, status, workflow_version, queue_name, priority,"
        " request_id),"
        " entry AS (INSERT INTO media_queue (job_id, queue_name, priority, base_priority, scheduled_time, status,"
        f"  created_at, attempts) SELECT id, %(queue_name)s, %(priority)s, %(priority)s, {at}, 'queued', {at}, 0"
        "  FROM job),"
        " event AS (INSERT INTO job_events (job_id, tenant_id, event_type, created_at, data)"
        f"  SELECT id, %(tenant_id)s, 'status', {at}, {_status_event_sql('CAST(%(workflow_code)s AS TEXT)')} FROM job)"
        " SELECT id, pg_notify(%(channel)s, %(queue_name)s) FROM job")


def one_job_statement(dialect: sa.Dialect, job: dict[str, Any], *, checksum: str, workflow_code: str,
                      channel: str) -> tuple[str, dict[str, Any]]:
    """The statement :func:`insert_queued_job` sends for ``job`` and its parameters, but for the times it stamps
    as the statement goes out (``submitted_at``, ``updated_at``, ``created_at``)."""
    params = {k: jsontext.dumps(v) if v is not None and k in _JSON_COLUMNS else v for k, v in job.items()}
    params.update(workflow_code=workflow_code, channel=channel, definition_checksum=checksum)
    return _one_job_statement(tuple(job), dialect, job.get("idempotency_key") is not None), params


def insert_queued_job(engine: Engine, job: dict[str, Any], *, checksum: str, workflow_code: str,
                      channel: str) -> int | None:
    """A queued job on its workflow's current version, in ONE statement on an autocommit connection (PostgreSQL;
    one round trip): the ``workflow_jobs`` row, its queue entry, its ``status`` event (:func:`status_event`) and
    the wake-up on ``channel`` — or nothing, and None, when the statement's own checks say the caller's facts
    are stale: the workflow's current version is no longer ``job["workflow_version"]`` with this ``checksum`` (a
    database restored or recreated can reuse ids), or it was deactivated,
    a rollout of it became active for the tenant, or a unique key (an Idempotency-Key, the job code) is taken. The
    caller then submits the general way, which reads everything again and explains a refusal. A job with an
    Idempotency-Key is inserted ``ON CONFLICT DO NOTHING`` (a client's retry meets its key: no error in the server's
    log); one without fails on a taken job code (1 in 2^40 a day) and is not written: a speculative insert would
    probe every unique index first and write one more WAL record, on every submit, for a case that rare.

    ``job`` holds ``workflow_jobs`` columns. Its times (``submitted_at`` and ``updated_at``, also the entry's and
    the event's) are stamped here, as the statement goes out: a job's wait counts from when the database was
    asked, not from when the caller began building the row (on an idle host that is a third of a millisecond)."""
    sql, params = one_job_statement(engine.dialect, job, checksum=checksum, workflow_code=workflow_code,
                                    channel=channel)
    try:
        with autocommit(engine) as cur:
            now = utcnow()
            params.update(submitted_at=now, updated_at=now, created_at=now)
            row = cur.execute(sql, params).fetchone()
    except CONSTRAINT_ERRORS:
        return None
    return None if row is None else int(row[0])
