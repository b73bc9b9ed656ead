"""What a batch submit costs PostgreSQL a job, with the client's encoding left out: 500-job batches whose rows
the server generates, timed statement by statement (the jobs, their queue entries, their status events, the
commit), as the schema is and with only the public data model's constraints (primary keys, ``job_code`` unique,
the two foreign keys: mediamill's secondary indexes dropped; with each job's status event and without it),
against pgqueuer's own insert of the same number of jobs. Medians of 20 batches, µs a job.

    python benchmarks/submit_floor.py [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as eb  # the folder's own benchmark harness

B = 500
JOBS = ("INSERT INTO workflow_jobs (job_code, workflow_id, status, priority, tenant_id, workflow_version,"
        " queue_name, input_key, input_file_path, input_mime, input_size, submitted_at, updated_at, current_step,"
        " progress_percent, retry_count, rescue_count, run_number, cancel_requested, params, job_metadata)"
        " SELECT 'J' || nextval('s'), {wf}, 'queued', 5, 'default', 1, 'bench', 'k/' || g, 'k/' || g,"
        " 'text/plain', 1024, now(), now(), 0, 0, 0, 0, 1, false, '{{}}'::json, '{{}}'::json"
        " FROM generate_series(1, {b}) g")
QUEUE = ("INSERT INTO media_queue (job_id, queue_name, priority, base_priority, scheduled_time, status, created_at,"
         " attempts) SELECT id, 'bench', 5, 5, now(), 'queued', now(), 0"
         " FROM workflow_jobs WHERE id > {last} ORDER BY id")
EVENTS = ("INSERT INTO job_events (job_id, tenant_id, event_type, created_at, data)"
          " SELECT id, 'default', 'status', now(), '{{\"status\": \"queued\", \"workflow\": \"WF-BENCH\","
          " \"version\": 1, \"queue\": \"bench\", \"priority\": 5, \"request_id\": null}}'::json"
          " FROM workflow_jobs WHERE id > {last} ORDER BY id")
PGQ = ("INSERT INTO pgqueuer (priority, entrypoint, payload, execute_after, status)"
       " SELECT 0, 'noop', NULL, now(), 'queued' FROM generate_series(1, {b})")
#: mediamill's own secondary indexes of the job and its queue entry (the seed's schema has none)
OUR_INDEXES = ("ix_workflow_jobs_status_priority", "ix_workflow_jobs_tenant_id_desc",
               "ix_workflow_jobs_workflow_status", "ix_workflow_jobs_submitted_at", "ix_workflow_jobs_input_key",
               "ix_media_queue_job", "ix_media_queue_claim")


def report(name: str, batch: Any, n: int = 20) -> None:
    """The median of ``n`` batches, µs a job, of each part ``batch()`` timed."""
    acc: dict[str, list[float]] = {}
    for _ in range(n):
        for k, v in batch().items():
            acc.setdefault(k, []).append(v / B * 1e6)
    medians = {k: statistics.median(v) for k, v in acc.items()}
    print(f"{name:10s}", "  ".join(f"{k} {v:5.1f}" for k, v in medians.items()),
          f" total {sum(medians.values()):5.1f} us/job", flush=True)


def main() -> None:
    args = eb.parse_args(["--jobs", "10000", *sys.argv[1:]])
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmb-")))
        _bench, dsn, _loop, _pgq = eb.side_by_side(stack, args, tmp)  # (pgqueuer's table: its insert below)
        c = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        c.execute("CREATE SEQUENCE s")
        wf = c.execute("SELECT id FROM workflow_definitions LIMIT 1").fetchall()[0][0]

        def ours(with_events: bool) -> dict[str, float]:
            t: dict[str, float] = {}

            def timed(part: str, sql: str) -> None:
                t0 = time.perf_counter()
                c.execute(sql)
                t[part] = time.perf_counter() - t0

            with c.transaction():
                last = c.execute("SELECT coalesce(max(id), 0) FROM workflow_jobs").fetchall()[0][0]
                timed("jobs", JOBS.format(wf=wf, b=B))
                timed("queue", QUEUE.format(last=last))
                if with_events:
                    timed("events", EVENTS.format(last=last))
                t0 = time.perf_counter()
            t["commit"] = time.perf_counter() - t0
            return t

        def theirs() -> dict[str, float]:
            t0 = time.perf_counter()
            with c.transaction():
                c.execute(PGQ.format(b=B))
            return {"pgq": time.perf_counter() - t0}

        for _ in range(2):
            report("as is", lambda: ours(True))
            report("pgqueuer", theirs)
        # the public data model's constraints only: our indexes dropped (primary keys, job_code's unique index and
        # the two foreign keys stay); with the status event (the bookkeeping the engine keeps for every job) and
        # without it
        for ix in OUR_INDEXES:
            c.execute(f"DROP INDEX {ix}")
        for _ in range(2):
            report("seed+event", lambda: ours(True))
            report("seed only", lambda: ours(False))
            report("pgqueuer", theirs)


if __name__ == "__main__":
    main()
