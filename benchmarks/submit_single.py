"""What bounds a single submit: jobs submitted one at a time, each its own transaction (``synchronous_commit`` on),
five ways in alternating rounds, so each is measured in the same minutes as the others (this machine's speed
drifts by a third between minutes; ``engine.py`` measures its systems one after another):

- ``mediamill``: ``submit_job`` — everything a caller pays;
- ``its statement``: the one statement ``submit_job`` sends, through psycopg on a connection of its own;
- ``data model floor``: the same statement into a second database with only the public data model's
  constraints (primary keys, ``job_code``'s unique index, the two foreign keys; mediamill's own secondary
  indexes dropped) and no status event — the job row and its queue entry alone;
- ``pgqueuer statement``: pgqueuer's own enqueue statement (its job row, its log row, its notify trigger),
  through psycopg;
- ``pgqueuer``: pgqueuer's ``Queries.enqueue`` — what ``engine.py`` times for it.

Medians over the rounds, µs a submit (wall clock and the submitting thread's CPU), and each median's ratio to
pgqueuer's (above 1: slower than pgqueuer).

    python benchmarks/submit_single.py [--rounds 7] [--per-round 500] [--pg-url postgresql://…]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from submit_floor import OUR_INDEXES

import engine as eb  # the folder's own benchmark harness


def _captured_statement(bench: eb.MediamillBench) -> tuple[str, dict[str, Any], str]:
    """The one statement ``submit_job`` sends for the benchmark's request, its parameters, and the statement
    without its status event's CTE."""
    from mediamill.engine.submit import submit_job
    from mediamill.store import submit_repo

    seen: dict[str, Any] = {}
    real = submit_repo.insert_queued_job

    def spy(engine: Any, job: dict[str, Any], **kw: Any) -> int | None:
        seen.update(job=dict(job), kw=kw)
        return real(engine, job, **kw)

    submit_repo.insert_queued_job = spy  # type: ignore[assignment]
    try:
        for _ in range(3):  # (the first learns the workflow; the next ones take one statement)
            submit_job(bench.engine, bench._req())
    finally:
        submit_repo.insert_queued_job = real  # type: ignore[assignment]
    sql, params = submit_repo.one_job_statement(bench.engine.dialect, seen["job"], **seen["kw"])
    event_at, select_at = sql.index(" event AS ("), sql.index(" SELECT id, pg_notify")
    return sql, params, sql[:event_at].rstrip(",") + sql[select_at:]


def _alternate(kinds: dict[str, Callable[[], None]], rounds: int, per_round: int, jobs_a_call: int = 1,
               warm_up: int = 20) -> None:
    """Each kind ``per_round`` times, one kind after another, ``rounds`` times over; the medians printed, µs a
    job (a call submits ``jobs_a_call``)."""
    for run in kinds.values():  # (prepared statements, warm caches)
        for _ in range(warm_up):
            run()
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind, run in kinds.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(per_round):
                run()
            walls[kind].append((time.perf_counter() - t0) / per_round / jobs_a_call * 1e6)
            cpus[kind].append((time.thread_time() - c0) / per_round / jobs_a_call * 1e6)
    base_wall, base_cpu = statistics.median(walls["pgqueuer"]), statistics.median(cpus["pgqueuer"])
    print(f"{rounds} rounds of {per_round} submits of {jobs_a_call} job(s) each, µs a job (median; × pgqueuer's; "
          "jobs/s: 1e6 / wall)")
    for kind in kinds:
        wall, cpu = statistics.median(walls[kind]), statistics.median(cpus[kind])
        print(f"{kind:20s} wall {wall:7.1f} ({wall / base_wall:5.3f}×)   client CPU {cpu:6.1f} "
              f"({cpu / base_cpu:5.3f}×)   rounds {' '.join(f'{w:.0f}' for w in walls[kind])}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=500, help="submits of each kind a round (default 500)")
    p.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    own = p.parse_args()
    args = eb.parse_args(["--pg-url", own.pg_url])
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmb-")))
        urls = [stack.enter_context(eb.postgres_database(args.pg_url)) for _ in range(2)]
        benches = [eb.MediamillBench("mediamill-postgres", tmp / f"data{i}", u, args) for i, u in enumerate(urls)]
        for bench in benches:
            stack.callback(bench.close)
        dsns = [u.replace("postgresql+psycopg://", "postgresql://") for u in urls]
        loop = asyncio.new_event_loop()
        pgq = eb.PgqBench(dsns[0], tmp, args)
        loop.run_until_complete(pgq.setup())
        stack.callback(lambda: loop.run_until_complete(pgq.close()))

        sql, params, floor_sql = _captured_statement(benches[0])
        ours = stack.enter_context(psycopg.connect(dsns[0], autocommit=True)).cursor()
        floor = stack.enter_context(psycopg.connect(dsns[1], autocommit=True)).cursor()
        floor_wf = floor.execute("SELECT id FROM workflow_definitions WHERE workflow_code = %s",
                                 (params["workflow_code"],)).fetchone()
        for ix in OUR_INDEXES:
            floor.execute(f"DROP INDEX {ix}")
        theirs = stack.enter_context(psycopg.connect(dsns[0], autocommit=True)).cursor()
        pgq_sql = re.sub(r"\$(\d)", "%s", pgq.q.qbq.build_enqueue_query("raise"))  # asyncpg's $n, psycopg's %s
        n = [0]

        def statement(cur: Any, text: str, workflow_id: int) -> Callable[[], None]:
            def run() -> None:
                n[0] += 1
                now = datetime.now(UTC).replace(tzinfo=None)
                cur.execute(text, {**params, "job_code": f"JOB-SINGLE-{n[0]}", "workflow_id": workflow_id,
                                   "submitted_at": now, "updated_at": now, "created_at": now}).fetchone()
            return run

        from mediamill.engine.submit import submit_job

        def mediamill() -> None:
            submit_job(benches[0].engine, benches[0]._req())

        def pgqueuer_statement() -> None:
            theirs.execute(pgq_sql, ([0], [eb.PGQ_ENTRYPOINT], [None], [timedelta(0)], [None], [None])).fetchall()

        def pgqueuer() -> None:
            loop.run_until_complete(pgq.q.enqueue(eb.PGQ_ENTRYPOINT, None, 0))

        kinds: dict[str, Callable[[], None]] = {
            "mediamill": mediamill,
            "its statement": statement(ours, sql, params["workflow_id"]),
            "data model floor": statement(floor, floor_sql, floor_wf[0] if floor_wf else 0),
            "pgqueuer statement": pgqueuer_statement,
            "pgqueuer": pgqueuer,
        }
        _alternate(kinds, own.rounds, own.per_round)

if __name__ == "__main__":
    main()
