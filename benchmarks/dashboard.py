"""Dashboard benchmark: every page's server time with 1,000,000 jobs in PostgreSQL.

    python benchmarks/dashboard.py [--json] [--jobs 1000000] [--runs 15] [--postgres-url URL] [--keep | --reuse URL]

Seeds a fresh database with ``INSERT … SELECT generate_series`` (jobs spread over 30 days, 91 %
completed, failures, a live backlog of ~12,000 queued/processing/pending jobs), plus smaller
tables in proportion: step executions for one job in ten (3 steps each), job events for one job
in five, dead letters for every failed job (the last 3 days still open), queue entries for the
live jobs and a delivery log for one job in ten. Then ``VACUUM ANALYZE``.

The app runs under uvicorn in this process; each page is requested ``--runs`` times after a
warm-up with a logged-in session cookie. "server" is the page's own ``Server-Timing`` (queries and
rendering); "wall" is the whole HTTP round trip on loopback. Target: server p95 ≤ 300 ms.
``--json`` prints ``{"jobs": N, "seed_seconds": s, "rows": [{"page", "server_median_ms",
"server_p95_ms", "wall_median_ms", "wall_p95_ms"}, …]}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
STATUS_ORDER = ("failed", "processing", "queued", "pending", "partial", "completed", "cancelled")  # /jobs?order=status

SEED_JOBS = """
INSERT INTO workflow_jobs (id, job_code, workflow_id, workflow_version, queue_name, priority, status, current_step,
    progress_percent, submitted_by, submitted_at, started_at, completed_at, finished_at, error_class, error_message,
    tenant_id, input_filename, input_mime, input_size, updated_at, run_number, retry_count, rescue_count,
    cancel_requested)
SELECT g, 'JOB-' || to_char(sub, 'YYYYMMDD') || '-' || lpad(upper(to_hex(g)), 8, '0'),
       (CAST(:wf_ids AS int[]))[1 + g % :wf_count], (CAST(:wf_versions AS int[]))[1 + g % :wf_count],
       (CAST(:wf_queues AS text[]))[1 + g % :wf_count],
       1 + floor(r3 * r3 * 10)::int, status, 3, CASE WHEN status = 'completed' THEN 100 ELSE 40 END,
       'bench', sub, started, CASE WHEN status IN ('completed', 'partial') THEN ended END, ended,
       CASE WHEN status = 'failed' THEN (ARRAY['invalid_input','transient','timeout','tool_failed'])[1 + g % 4] END,
       CASE WHEN status = 'failed' THEN 'benchmark failure' END, 'default', 'file-' || g || '.mp4', 'video/mp4',
       1000000, sub, 1, 0, 0, FALSE
FROM (
 SELECT g, sub, r3, status, started,
        CASE WHEN status IN ('queued', 'pending', 'processing') THEN NULL
             ELSE started + (1 + r4 * r4 * 300) * interval '1 second' END AS ended
 FROM (
  SELECT g, sub, r3, r4, status,
         CASE WHEN status IN ('queued', 'pending') THEN NULL ELSE sub + r2 * interval '30 seconds' END AS started
  FROM (
    SELECT g, r2, r3, r4, (now() AT TIME ZONE 'utc') - interval '30 days' * (1 - g::float8 / :n) AS sub,
           CASE WHEN g > :n - 20000 AND r1 < 0.6 THEN
                  CASE WHEN r2 < 0.02 THEN 'processing' WHEN r2 < 0.12 THEN 'pending' ELSE 'queued' END
                WHEN r1 < 0.04 THEN 'failed' WHEN r1 < 0.05 THEN 'partial' WHEN r1 < 0.06 THEN 'cancelled'
                ELSE 'completed' END AS status
    FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4
          FROM generate_series(1, :n) AS g) AS r
  ) AS s
 ) AS t
) AS j
"""

SEED_STEPS = """
INSERT INTO step_executions (job_id, step_id, status, started_at, completed_at, duration_seconds, duration_ms,
    retry_attempt, action, step_name, run_number, error_class, error_message, worker_id)
SELECT wj.id, ws.id, CASE WHEN wj.status = 'failed' AND ws.step_number = 3 THEN 'failed' ELSE 'completed' END,
       wj.started_at, wj.finished_at, ms / 1000, ms, 0, ws.action, ws.step_name, 1,
       CASE WHEN wj.status = 'failed' AND ws.step_number = 3 THEN wj.error_class END,
       CASE WHEN wj.status = 'failed' AND ws.step_number = 3 THEN wj.error_message END, 'bench-worker'
FROM workflow_jobs wj
JOIN workflow_steps ws ON ws.workflow_id = wj.workflow_id AND ws.version = wj.workflow_version AND ws.step_number <= 3
CROSS JOIN LATERAL (SELECT (50 + random() * random() * 20000)::int + wj.id * 0 AS ms) AS d
WHERE wj.id % 10 = 0 AND wj.finished_at IS NOT NULL
"""

SEED_EVENTS = """
INSERT INTO job_events (job_id, tenant_id, event_type, step_name, data, created_at)
SELECT wj.id, 'default', 'status', NULL, json_build_object('status', s.status), s.at
FROM workflow_jobs wj
CROSS JOIN LATERAL (VALUES ('queued', wj.submitted_at), (wj.status, COALESCE(wj.finished_at, wj.submitted_at)))
     AS s(status, at)
WHERE wj.id % 5 = 0
ORDER BY wj.id
"""

SEED_REST = [
    """INSERT INTO dead_letters (job_id, tenant_id, workflow_code, workflow_version, failed_step, error_class,
           error_message, attempts, created_at, resolved_at, resolution, resolved_by)
       SELECT wj.id, 'default', wd.workflow_code, wj.workflow_version, 'Step 3', wj.error_class, wj.error_message,
              '[]'::json, wj.finished_at,
              CASE WHEN wj.finished_at < (now() AT TIME ZONE 'utc') - interval '3 days'
                   THEN wj.finished_at + interval '1 hour' END,
              CASE WHEN wj.finished_at < (now() AT TIME ZONE 'utc') - interval '3 days' THEN 'discarded' END,
              CASE WHEN wj.finished_at < (now() AT TIME ZONE 'utc') - interval '3 days' THEN 'bench' END
       FROM workflow_jobs wj JOIN workflow_definitions wd ON wd.id = wj.workflow_id WHERE wj.status = 'failed'""",
    """INSERT INTO media_queue (job_id, queue_name, priority, base_priority, scheduled_time, status, created_at,
           worker_id, picked_up_at, lease_expires_at, attempts)
       SELECT id, queue_name, priority, priority, submitted_at, status, submitted_at,
              CASE WHEN status = 'processing' THEN 'bench-worker' END,
              CASE WHEN status = 'processing' THEN started_at END,
              CASE WHEN status = 'processing' THEN (now() AT TIME ZONE 'utc') + interval '1 minute' END, 0
       FROM workflow_jobs WHERE status IN ('queued', 'processing')""",
    """INSERT INTO workflow_notifications (job_id, tenant_id, notification_type, channel, recipient, event_type,
           event_id, status, attempts, sent_at, created_at)
       SELECT id, 'default', 'webhook', 'webhook', 'https://hooks.example.com/mediamill', 'job.' || status,
              md5(id::text), CASE WHEN id % 50 = 0 THEN 'failed' ELSE 'sent' END, 1, finished_at, finished_at
       FROM workflow_jobs WHERE id % 10 = 1 AND finished_at IS NOT NULL ORDER BY id""",
    """INSERT INTO workers (id, hostname, pid, pools, status, started_at, heartbeat_at, jobs_done, version)
       SELECT 'bench-worker-' || g, 'bench-host', 1000 + g, '{"*": 2}'::json, 'running',
              (now() AT TIME ZONE 'utc') - interval '1 day', now() AT TIME ZONE 'utc', 100000 * g, 'bench'
       FROM generate_series(1, 4) AS g""",
    """INSERT INTO circuit_breakers (action, state, failure_count, success_count, opened_at, next_probe_at,
           updated_at, last_error)
       VALUES ('transcode_video', 'open', 12, 0, now() AT TIME ZONE 'utc', (now() AT TIME ZONE 'utc')
               + interval '30 seconds', now() AT TIME ZONE 'utc', 'ffmpeg exited with 1'),
              ('optimize_image', 'closed', 0, 40, NULL, NULL, now() AT TIME ZONE 'utc', NULL)""",
]


# ------------------------------------------------------------------------------ database
@contextlib.contextmanager
def fresh_database(base_url: str, keep: bool) -> Iterator[str]:
    name = f"mm_dash_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base_url.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base_url.rsplit('/', 1)[0]}/{name}"
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        else:
            print(f"kept database {name}", file=sys.stderr)
        admin.dispose()


def seed(engine: sa.Engine, jobs: int) -> dict[str, int]:
    """Fill the tables (see the module docstring); returns row counts."""
    with engine.connect() as conn:
        wfs = conn.execute(sa.text("SELECT id, COALESCE(current_version, 1), queue_name FROM workflow_definitions "
                                   "ORDER BY id")).all()
    params = {"n": jobs, "wf_ids": [w[0] for w in wfs], "wf_versions": [w[1] for w in wfs],
              "wf_queues": [w[2] for w in wfs], "wf_count": len(wfs)}
    with engine.begin() as conn:
        conn.execute(sa.text(SEED_JOBS), params)
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('workflow_jobs', 'id'), :n)"), {"n": jobs})
        conn.execute(sa.text(SEED_STEPS))
        conn.execute(sa.text(SEED_EVENTS))
        for sql in SEED_REST:
            conn.execute(sa.text(sql))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
        tables = ("workflow_jobs", "step_executions", "job_events", "dead_letters", "media_queue",
                  "workflow_notifications")
        return {t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in tables}


# ------------------------------------------------------------------------------ server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(rt: Any) -> Iterator[str]:
    import uvicorn

    from mediamill.api.app import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def logged_in(base: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=True)
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    res = client.post("/login", data={"key": key, "csrf_token": token.group(1), "next": "/"})
    assert res.status_code == 200 and "Overview" in res.text, res.status_code
    return client


def pages(engine: sa.Engine, client: httpx.Client) -> list[str]:
    """The pages to time: every page, plus deep and filtered variants of the jobs list."""
    with engine.connect() as conn:
        job_id = conn.execute(sa.text("SELECT max(id) FROM step_executions")).scalar()
        job_id = conn.execute(sa.text("SELECT job_id FROM step_executions WHERE id = :i"), {"i": job_id}).scalar()
        middle = int(conn.execute(sa.text("SELECT max(id) FROM workflow_jobs")).scalar_one()) // 2
        code = conn.execute(sa.text("SELECT job_code FROM workflow_jobs WHERE id = :i"), {"i": middle}).scalar()
    deep = "/jobs?order=status"
    for _ in range(20):  # page 21 of the by-status ordering: a keyset cursor deep into "completed"
        nxt = re.search(r'<a rel="next" href="([^"]+)"', client.get(deep).text)
        deep = nxt.group(1).replace("&amp;", "&") if nxt else deep
    completed = f"/jobs?order=status&after={STATUS_ORDER.index('completed')}.5.{middle}"  # half-way through
    return ["/", "/?window=7d", "/jobs", f"/jobs?after={middle}", deep, completed, "/jobs?status=completed",
            "/jobs?workflow=WF-IMAGE-PROCESS",
            f"/jobs?q={code}", "/jobs?q=ABC", f"/jobs/{job_id}", "/upload", "/queues", "/steps", "/steps?window=7d",
            "/workflows", "/workflows?window=7d", "/workflows/WF-VIDEO-TRANSCODE", "/dead-letters", "/breakers",
            "/workers", "/notifications", "/alerts"]


def measure(client: httpx.Client, path: str, runs: int) -> dict[str, Any]:
    client.get(path)  # warm-up
    server, wall = [], []
    for _ in range(runs):
        start = time.perf_counter()
        res = client.get(path)
        wall.append((time.perf_counter() - start) * 1000)
        assert res.status_code == 200, (path, res.status_code)
        server.append(float(re.search(r"dur=([0-9.]+)", res.headers["server-timing"]).group(1)))  # type: ignore[union-attr]
    return {"page": path if len(path) < 60 else path[:57] + "…",
            "server_median_ms": round(statistics.median(server), 1), "server_p95_ms": round(_p95(server), 1),
            "wall_median_ms": round(statistics.median(wall), 1), "wall_p95_ms": round(_p95(wall), 1)}


def _p95(values: list[float]) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, round(0.95 * (len(data) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    from mediamill.config import Settings
    from mediamill.runtime import Runtime
    from mediamill.store import auth_repo

    database = contextlib.nullcontext(args.reuse) if args.reuse else fresh_database(args.postgres_url, args.keep)
    with database as url, tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(Settings(data_dir=Path(tmp), database_url=url))
        rt.prepare()
        start = time.perf_counter()
        counts = seed(rt.engine, args.jobs) if not args.reuse else {}
        seeded = time.perf_counter() - start
        key = auth_repo.create_key(rt.engine, role="admin", name="bench").plaintext
        with serve(rt) as base:
            client = logged_in(base, key)
            rows = [measure(client, path, args.runs) for path in pages(rt.engine, client)]
            client.close()
        rt.close()
    return {"jobs": args.jobs, "seed_seconds": round(seeded, 1), "rows_seeded": counts, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15, help="timed requests per page")
    parser.add_argument("--postgres-url", default=os.environ.get("MEDIAMILL_TEST_POSTGRES_URL") or DEFAULT_PG)
    parser.add_argument("--keep", action="store_true", help="keep the seeded database (its name goes to stderr)")
    parser.add_argument("--reuse", default="", help="time the pages of an already seeded database URL (no seeding)")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['jobs']:,} jobs seeded in {result['seed_seconds']} s: {result['rows_seeded']}")
    print(f"{'page':<58} {'server p50':>10} {'server p95':>10} {'wall p50':>9} {'wall p95':>9}   (ms)")
    for r in result["rows"]:
        flag = "" if r["server_p95_ms"] <= 300 else "  > 300 ms"
        print(f"{r['page']:<58} {r['server_median_ms']:>10} {r['server_p95_ms']:>10} {r['wall_median_ms']:>9} "
              f"{r['wall_p95_ms']:>9}{flag}")


if __name__ == "__main__":
    main()
