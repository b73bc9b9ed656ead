"""What bounds a batch submit: batches of ``--batch`` jobs (500, as ``engine.py``'s), each its own transaction
(``synchronous_commit`` on), four ways in alternating rounds, so each is measured in the same minutes as the
others (this machine's speed drifts by a third between minutes, and a table's growth slows every insert into it):

- ``mediamill``: ``submit_many`` of a workflow the process knows (one statement) — everything a caller pays,
  building the requests included, as ``engine.py`` times it;
- ``general path``: ``submit_many`` as if the workflow were new to the process (a transaction: begin, the
  workflow's head, its rollouts, the statement, the wake-up, commit);
- ``its statement``: the one statement ``submit_many`` sends, with its parameters built once, through psycopg on
  a connection of its own — the server's work and the driver's;
- ``without the FKs``: that statement again, into copies of the three tables it writes with every index, default
  and check, but not the public data model's two foreign keys (the job's workflow, the queue entry's job):
  what those two checks cost a job, measured in the same rounds;
- ``pgqueuer statement``: pgqueuer's own enqueue statement (its job rows, its log rows, its notify trigger) for
  the same number of jobs, through psycopg;
- ``pgqueuer``: pgqueuer's ``Queries.enqueue`` of the same number of jobs — what ``engine.py`` times for it.

Medians over the rounds, µs a job (wall clock and the submitting thread's CPU), and each median's ratio to
pgqueuer's (above 1: slower than pgqueuer; the issue's target, at least 0.5x pgqueuer's rate, is a wall ratio of
at most 2). Then the server's CPU a job for the two statements sent alone (their backends' user + system time,
read from ``/proc``: the database on this host), the figure that bounds a batch.

    python benchmarks/submit_batch.py [--rounds 7] [--per-round 4] [--batch 500] [--pg-url postgresql://…]
"""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from submit_single import _alternate

import engine as eb  # the folder's own benchmark harness


def _captured_statement(bench: eb.MediamillBench, size: int) -> tuple[str, list[Any], int]:
    """The one statement ``submit_many`` sends for a batch of ``size``, its parameters, and where the job codes
    are among them."""
    from mediamill.engine.submit import submit_many
    from mediamill.store import submit_repo

    seen: dict[str, Any] = {}
    real = submit_repo.autocommit

    @contextlib.contextmanager
    def spy(engine: Any) -> Any:
        with real(engine) as cur:
            class Spy:
                def execute(self, sql: str, params: Any) -> Any:
                    seen.update(sql=sql, params=list(params))
                    return cur.execute(sql, params)
            yield Spy()

    submit_repo.autocommit = spy  # type: ignore[assignment]
    try:
        for _ in range(2):  # (the first learns the workflow; the next takes one statement)
            submit_many(bench.engine, [bench._req() for _ in range(size)])
    finally:
        submit_repo.autocommit = real  # type: ignore[assignment]
    params = seen["params"]
    codes = next(i for i, v in enumerate(params) if isinstance(v, list) and str(v[0]).startswith("JOB-"))
    return seen["sql"], params, codes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=4, help="batches of each kind a round (default 4)")
    p.add_argument("--batch", type=int, default=500, help="jobs a batch (default 500)")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    own = p.parse_args()
    if own.batch < 2:
        p.error("--batch must be at least 2 (a single submit: submit_single.py)")
    args = eb.parse_args(["--pg-url", own.pg_url])
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmb-")))
        bench, dsn, loop, pgq = eb.side_by_side(stack, args, tmp)

        from mediamill.engine import submit

        sql, params, codes_at = _captured_statement(bench, own.batch)
        cur = stack.enter_context(psycopg.connect(dsn, autocommit=True)).cursor()
        n = [0]
        size = own.batch

        def mediamill() -> None:
            submit.submit_many(bench.engine, [bench._req() for _ in range(size)])

        def general_path() -> None:
            submit._known_of(bench.engine).clear()
            submit.submit_many(bench.engine, [bench._req() for _ in range(size)])

        def statement_on(cursor: Any) -> Callable[[], None]:
            """The captured statement sent through ``cursor``, with job codes no call used before."""
            def send() -> None:
                n[0] += 1
                params[codes_at] = [f"JOB-BATCH-{n[0]}-{k}" for k in range(size)]
                assert cursor.execute(sql, params).fetchone() is not None
            return send

        unchecked = _without_foreign_keys(stack.enter_context(psycopg.connect(dsn, autocommit=True)).cursor())

        theirs = stack.enter_context(psycopg.connect(dsn, autocommit=True)).cursor()
        pgq_sql = re.sub(r"\$(\d)", "%s", pgq.q.qbq.build_enqueue_query("raise"))  # asyncpg's $n, psycopg's %s
        pgq_params = ([0] * size, [eb.PGQ_ENTRYPOINT] * size, [None] * size, [timedelta(0)] * size, [None] * size,
                      [None] * size)

        def pgqueuer_statement() -> None:
            theirs.execute(pgq_sql, pgq_params).fetchall()

        def pgqueuer() -> None:
            loop.run_until_complete(pgq.q.enqueue([eb.PGQ_ENTRYPOINT] * size, [None] * size, [0] * size))

        server = {"its statement": _ServerCpu(cur, statement_on(cur)),
                  "without the FKs": _ServerCpu(unchecked, statement_on(unchecked)),
                  "pgqueuer statement": _ServerCpu(theirs, pgqueuer_statement)}
        kinds: dict[str, Callable[[], None]] = {
            "mediamill": mediamill, "general path": general_path, **server, "pgqueuer": pgqueuer}
        _alternate(kinds, own.rounds, own.per_round, size, warm_up=WARM_UP)
        print("server CPU a job (the statement's backend, user + system):", ", ".join(
            f"{kind} {timed.seconds / max(1, timed.calls) / size * 1e6:.1f} µs" for kind, timed in server.items()))


WARM_UP = 6  # calls of each kind before the rounds

#: the tables a batch's statement writes, the foreign keys of the public data model among their constraints
WRITTEN = ("workflow_jobs", "media_queue", "job_events")


def _without_foreign_keys(cur: Any) -> Any:
    """``cur`` with its unqualified table names led to copies of :data:`WRITTEN` in a schema of their own, made
    with ``LIKE … INCLUDING ALL`` (indexes, defaults — the same id sequences —, checks, not-null), which copies
    no foreign key; every other table is still ``public``'s."""
    cur.execute("CREATE SCHEMA IF NOT EXISTS no_fks")
    for table in WRITTEN:
        cur.execute(f"CREATE TABLE no_fks.{table} (LIKE public.{table} INCLUDING ALL)")
    assert not cur.execute("SELECT 1 FROM pg_constraint WHERE contype = 'f' AND connamespace = "
                           "'no_fks'::regnamespace").fetchall()
    cur.execute("SET search_path = no_fks, public")
    return cur


class _ServerCpu:
    """A kind that also adds up its backend's CPU seconds (``/proc``; ticks of 10 ms, so over many calls), but for
    its first ``warm_up`` calls (the statement not yet prepared, its plans not yet generic)."""

    def __init__(self, cur: Any, run: Callable[[], None], warm_up: int = WARM_UP) -> None:
        self.pid = cur.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.run, self.seconds, self.calls, self.warm_up = run, 0.0, 0, warm_up

    def __call__(self) -> None:
        before = eb.proc_cpu(self.pid)
        self.run()
        if self.warm_up:
            self.warm_up -= 1
            return
        self.seconds += eb.proc_cpu(self.pid) - before
        self.calls += 1


if __name__ == "__main__":
    main()
