"""Fleet benchmark: worker hosts as network namespaces on one PostgreSQL cluster and one S3 server.

    .venv/bin/python benchmarks/fleet.py [--hosts 3] [--jobs 400] [--json]

The fleet is the one the test suite builds (tests/fleet/netns.py; root needed): a bridge, one namespace per
worker host running `mediamill worker --pool '*=2'`, two `mediamill api` replicas in namespaces of their own,
a PostgreSQL cluster of the benchmark's own (pg_stat_statements loaded) and moto's S3 server on the bridge.

For 1 … ``--hosts`` hosts it measures the drain of ``--jobs`` one-step 0.5 s sleep jobs (ideal: 2 slots × hosts
/ 0.5 s = 4 jobs/s per host) and of as many one-step noop jobs. Each drain starts with the jobs already queued
(submitted through the API to a paused queue, then resumed) and ends at the last job's ``finished_at``.
Around each drain the cluster's counters give the database's cost per completed job: statements
(pg_stat_statements of the mediamill database, the benchmark's own polling excluded), commits
(pg_stat_database.xact_commit, the benchmark's own transactions subtracted; the snapshots wait 11 s after a burst,
as PostgreSQL publishes a backend's counters up to 10 s late), WAL bytes (pg_current_wal_lsn) and
the CPU seconds of every PostgreSQL process (/proc/<pid>/stat of the postmaster, its live children and the
children it reaped). With every host running, it then measures the same figures per running step-second
(2 × hosts 30 s sleep steps, a 10 s window while all run, with the statements that dominate it) and, with the
workers restarted on a 5 s lease, the rescue time after one host's cable is pulled. Everything but the rescue runs
on the default settings (30 s lease, 1 s polling fallback). ``--json`` prints ``{"rows": [...]}``. The figures
and their machine are in docs/scaling.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/fleet.py` puts benchmarks/ first; the fleet lives in tests/
    sys.path.insert(0, str(ROOT))

from tests.fleet.netns import Fleet, netns_fleet  # noqa: E402

LEASE = 5
SLOTS = 2
SLEEP_S = 0.5
LONG_S = 30
WINDOW_S = 10
# A backend flushes its counters (pg_stat_database.xact_commit among them) at most once a second; what it could not
# flush then waits for its idle timer, PGSTAT_IDLE_INTERVAL = 10 s (PostgreSQL >= 15). So a burst (submits, claims,
# the last transactions of a drain) reaches the commit counter up to 10 s after it ended: snapshots wait this long
# after one, or the burst's commits land in the next window.
SETTLE_S = 11.0
MONITOR_ROLE = "mm_bench"


def _workflow(code: str, queue: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"code": code, "name": code.lower(), "type": "generic", "queue": queue, "steps": steps}


WORKFLOWS = [
    _workflow("WF-SLEEP", "sleep", [{"name": "nap", "action": "sleep", "params": {"seconds": SLEEP_S}}]),
    _workflow("WF-NOOP", "noop", [{"name": "nothing", "action": "noop"}]),
    _workflow("WF-LONG", "long", [{"name": "nap", "action": "sleep", "params": {"seconds": LONG_S}}]),
    _workflow("WF-CUT", "cut", [{"name": "first", "action": "noop"},
                                {"name": "nap", "action": "sleep", "params": {"seconds": 6}},
                                {"name": "last", "action": "noop"}]),
]


# ------------------------------------------------------------------------------ the database's costs
@dataclass
class Snapshot:
    statements: int
    commits: int
    wal_bytes: int
    cpu_s: float
    monitor: int  # the benchmark's own statements on the mediamill database so far (each its own commit)


class Meter:
    """Counters of the fleet's cluster, read from the ``postgres`` database (so reading them costs the mediamill
    database nothing) and polls of the mediamill database as ``mm_bench`` (excluded from the statements,
    subtracted from the commits)."""

    def __init__(self, fleet: Fleet) -> None:
        import psycopg

        cluster = fleet.cluster
        self.cluster = cluster
        self.stats = psycopg.connect(cluster.admin_url(), autocommit=True)
        self.stats.execute(f"CREATE ROLE {MONITOR_ROLE} LOGIN SUPERUSER")
        self.stats.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.db = psycopg.connect(cluster.local_url.replace("postgres@", f"{MONITOR_ROLE}@"), autocommit=True)
        self.monitor = 0
        self.dbid = int(self._one("SELECT oid FROM pg_database WHERE datname = %s", cluster.database))
        self.bench_id = int(self._one("SELECT oid FROM pg_roles WHERE rolname = %s", MONITOR_ROLE))

    def _one(self, sql: str, *args: Any) -> Any:
        row = self.stats.execute(sql, args).fetchone()
        return row[0] if row else None

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """A query on the mediamill database, counted as the benchmark's own."""
        self.monitor += 1
        return list(self.db.execute(sql, args).fetchall())

    def vacuum(self) -> None:
        """VACUUM ANALYZE the mediamill database (its transactions are the benchmark's own, before a window), then
        pg_statistic, which the ANALYZE left with as many dead rows as it wrote (autovacuum's next target)."""
        for sql in ("VACUUM (ANALYZE)", "SELECT pg_stat_force_next_flush()", "VACUUM pg_catalog.pg_statistic"):
            if "pg_stat_force_next_flush" not in sql or self.db.info.server_version >= 150000:
                self.monitor += 1
                self.db.execute(sql)

    def snapshot(self) -> Snapshot:
        if self.db.info.server_version >= 150000:
            # the benchmark's own commits so far reach the counter now, so that subtracting them is exact
            self.query("SELECT pg_stat_force_next_flush()")
        statements = self._one("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE dbid = %s "
                               "AND userid <> %s", self.dbid, self.bench_id)
        commits = self._one("SELECT xact_commit FROM pg_stat_database WHERE datid = %s", self.dbid)
        wal = self._one("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
        return Snapshot(int(statements), int(commits), int(wal), self._cpu(), self.monitor)

    def vacuums(self) -> int:
        """Autovacuum and autoanalyze runs so far on the mediamill database's tables."""
        rows = self.query("SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0) FROM pg_stat_all_tables")
        return int(rows[0][0])

    def calls(self) -> dict[str, int]:
        """Calls so far of each statement on the mediamill database (the benchmark's own excluded)."""
        rows = self.stats.execute("SELECT query, sum(calls) FROM pg_stat_statements WHERE dbid = %s "
                                  "AND userid <> %s GROUP BY query", (self.dbid, self.bench_id)).fetchall()
        return {str(q): int(n) for q, n in rows}

    def _cpu(self) -> float:
        """CPU seconds of the cluster: the postmaster, its live children, and what its reaped children used."""
        postmaster = self.cluster.postmaster_pid()
        ticks = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                pid, ppid = int(entry), int(fields[1])
                if pid == postmaster:
                    ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
                elif ppid == postmaster:
                    ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def cost(self, before: Snapshot, after: Snapshot, per: float) -> dict[str, float]:
        """The difference of two snapshots divided by ``per`` (jobs, or step-seconds)."""
        own = after.monitor - before.monitor
        return {"statements": round((after.statements - before.statements) / per, 2),
                "commits": round((after.commits - before.commits - own) / per, 2),
                "wal_bytes": round((after.wal_bytes - before.wal_bytes) / per),
                "pg_cpu_ms": round((after.cpu_s - before.cpu_s) * 1000 / per, 2)}

    def close(self) -> None:
        self.db.close()
        self.stats.close()


# ------------------------------------------------------------------------------ phases
def _submit(fleet: Fleet, upload: str, workflow: str, count: int) -> list[int]:
    """``count`` submits through both replicas, 8 at a time."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(lambda n: fleet.submit(upload, workflow, n),
                              [count // 8 + (1 if i < count % 8 else 0) for i in range(8)]))
    return [i for part in parts for i in part]


def _queue(fleet: Fleet, name: str, action: str) -> None:
    httpx.post(f"{fleet.api_urls[0]}/v1/queues/{name}/{action}", headers=fleet.headers(),
               timeout=30).raise_for_status()


def _wait_finished(meter: Meter, ids: list[int], timeout: float) -> int:
    """Poll until every job is terminal; the number not completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = meter.query("SELECT status, count(*) FROM workflow_jobs WHERE id = ANY(%s) "
                           "AND finished_at IS NOT NULL GROUP BY status", ids)
        if sum(n for _, n in rows) == len(ids):
            return len(ids) - sum(n for s, n in rows if s == "completed")
        time.sleep(0.5)
    raise RuntimeError(f"{len(ids)} jobs not finished within {timeout} s")


def drain(fleet: Fleet, meter: Meter, upload: str, workflow: dict[str, Any], jobs: int, hosts: int,
          ideal: float | None) -> dict[str, Any]:
    queue = workflow["queue"]
    _queue(fleet, queue, "pause")
    ids = _submit(fleet, upload, workflow["code"], jobs)
    time.sleep(SETTLE_S)
    before = meter.snapshot()
    t0 = datetime.now(UTC).replace(tzinfo=None)
    _queue(fleet, queue, "resume")
    failed = _wait_finished(meter, ids, timeout=max(120, 4 * jobs))
    time.sleep(SETTLE_S)
    after = meter.snapshot()
    (last, busy_ms), = meter.query(
        "SELECT max(j.finished_at), (SELECT coalesce(sum(duration_ms), 0) FROM step_executions "
        "WHERE job_id = ANY(%s)) FROM workflow_jobs j WHERE j.id = ANY(%s)", ids, ids)
    per_worker = sorted((int(n) for _, n in meter.query(
        "SELECT worker_id, count(*) FROM step_executions WHERE job_id = ANY(%s) AND status = 'completed' "
        "GROUP BY worker_id", ids)), reverse=True)
    elapsed = (last - t0).total_seconds()
    rate = jobs / elapsed
    cost = meter.cost(before, after, jobs)
    row: dict[str, Any] = {"case": f"drain {workflow['code']}", "hosts": hosts, "jobs": jobs, "not_completed": failed,
                           "seconds": round(elapsed, 2), "jobs_per_s": round(rate, 2),
                           "slots_busy": round(float(busy_ms) / 1000 / (hosts * SLOTS * elapsed), 3),
                           "jobs_per_worker": per_worker, "load_avg": round(os.getloadavg()[0], 1),
                           **{f"{k}_per_job": v for k, v in cost.items()},
                           # what the database spends per second of the drain (the model's check points)
                           "pg_cpu_ms_per_s": round(cost["pg_cpu_ms"] * rate, 1),
                           "commits_per_s": round(cost["commits"] * rate, 1)}
    if ideal:
        row["of_ideal"] = round(rate / ideal, 3)
    return row


def step_seconds(fleet: Fleet, meter: Meter, upload: str, hosts: int) -> dict[str, Any]:
    """The database's cost while every slot runs a long step: per running step-second."""
    running = hosts * SLOTS
    # the drains left dead rows and changed tables behind: vacuumed and analyzed now, or autovacuum does it inside
    # the window (a dozen runs, each a few commits of the database's), a cost of the drains and not of the steps
    meter.vacuum()
    ids = _submit(fleet, upload, "WF-LONG", running)
    deadline = time.monotonic() + 60
    while len(meter.query("SELECT 1 FROM step_executions WHERE job_id = ANY(%s) AND status = 'running'",
                          ids)) < running:
        if time.monotonic() > deadline:
            raise RuntimeError("the long steps did not all start")
        time.sleep(0.2)
    time.sleep(SETTLE_S)
    vacuums = meter.vacuums()
    before, calls = meter.snapshot(), meter.calls()
    time.sleep(WINDOW_S)
    after, later = meter.snapshot(), meter.calls()
    vacuums = meter.vacuums() - vacuums
    if len(meter.query("SELECT 1 FROM step_executions WHERE job_id = ANY(%s) AND status = 'running'",
                       ids)) < running:
        raise RuntimeError("a long step ended inside the window: the window measured no steady state")
    _wait_finished(meter, ids, timeout=LONG_S * 3)
    step_s = running * WINDOW_S
    top = sorted(((n - calls.get(q, 0), q) for q, n in later.items() if n > calls.get(q, 0)), reverse=True)[:6]
    return {"case": "running steps", "hosts": hosts, "steps": running, "window_s": WINDOW_S,
            **{f"{k}_per_step_s": v for k, v in meter.cost(before, after, step_s).items()},
            # the fleet's transactions as pg_stat_statements sees them (each opens with BEGIN: the processes send
            # no statement outside one), beside the cluster's commit counter above, which counts every transaction
            # of the database (autovacuum's, and a new backend's start-up, included)
            "worker_transactions_per_step_s": round(sum(n - calls.get(q, 0) for q, n in later.items()
                                                        if q.strip().upper() == "BEGIN") / step_s, 3),
            "autovacuum_runs_in_window": vacuums,
            "top_statements_per_step_s": [[round(n / step_s, 2), " ".join(q.split())[:90]] for n, q in top]}


def rescue(fleet: Fleet, meter: Meter, upload: str) -> dict[str, Any]:
    """Pull the first host's cable while it runs steps: seconds until none of its jobs is held by it."""
    victim = fleet.worker_hosts[0]
    worker = fleet.worker_ids[victim.name]
    ids = _submit(fleet, upload, "WF-CUT", SLOTS * len(fleet.worker_hosts))
    deadline = time.monotonic() + 60
    while not (held := [r[0] for r in meter.query(
            "SELECT q.job_id FROM media_queue q JOIN step_executions s ON s.job_id = q.job_id AND "
            "s.step_name = 'nap' AND s.status = 'running' AND s.worker_id = q.worker_id "
            "WHERE q.job_id = ANY(%s) AND q.worker_id = %s AND q.status = 'processing'", ids, worker)]):
        if time.monotonic() > deadline:
            raise RuntimeError("the first host never ran a step")
        time.sleep(0.1)
    t_cut = time.monotonic()
    fleet.cut(victim)
    try:
        while meter.query("SELECT 1 FROM media_queue WHERE job_id = ANY(%s) AND worker_id = %s "
                          "AND status = 'processing'", held, worker):
            if time.monotonic() - t_cut > 60:
                raise RuntimeError("the cut host's jobs were not rescued within 60 s")
            time.sleep(0.05)
        rescued = time.monotonic() - t_cut
        time.sleep(max(0.0, 8 - (time.monotonic() - t_cut)))
    finally:
        fleet.restore(victim)
    failed = _wait_finished(meter, ids, timeout=120)
    (duplicated,), = meter.query(
        "SELECT count(*) FROM (SELECT 1 FROM step_executions WHERE job_id = ANY(%s) AND status = 'completed' "
        "GROUP BY job_id, step_id HAVING count(*) > 1) d", ids)
    return {"case": "rescue after a cut", "hosts": len(fleet.worker_hosts), "lease_s": LEASE,
            "held_by_cut_host": len(held), "rescue_s": round(rescued, 2), "not_completed": failed,
            "duplicated_steps": int(duplicated)}


def run(hosts: int, jobs: int, work: Path, log: Any = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def out(row: dict[str, Any]) -> None:
        rows.append(row)
        if log:
            log(row)

    # the per-key submit limit is policy, not capacity: raised so bursts of --jobs go through
    settings = {"log_level": "WARNING", "submit_rate_per_minute": 10**7}
    with netns_fleet(work, worker_hosts=hosts, api_hosts=2, workflows=WORKFLOWS,
                     settings=settings) as fleet, _meter(fleet) as meter:
        upload = fleet.upload(b"fleet benchmark input\n")
        for n in range(1, hosts + 1):
            fleet.start_workers(n)
            try:
                out(drain(fleet, meter, upload, WORKFLOWS[0], jobs, n, ideal=n * SLOTS / SLEEP_S))
                out(drain(fleet, meter, upload, WORKFLOWS[1], jobs, n, ideal=None))
                if n == hosts:
                    out(step_seconds(fleet, meter, upload, n))
            finally:
                fleet.stop_workers()
        if hosts < 2:
            return rows  # a rescue needs a host left to take the cut host's jobs
        # the rescue needs a short lease (the costs above are measured with the default settings), and a server-side
        # idle-in-transaction timeout below it: a host cut mid-transaction keeps its rows locked until then
        fleet.start_workers(hosts, lease_seconds=LEASE, db_idle_in_transaction_timeout_seconds=4)
        try:
            out(rescue(fleet, meter, upload))
        finally:
            fleet.stop_workers()
    return rows


@contextlib.contextmanager
def _meter(fleet: Fleet) -> Iterator[Meter]:
    meter = Meter(fleet)
    try:
        yield meter
    finally:
        meter.close()


def _print(row: dict[str, Any]) -> None:
    print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=3, help="worker hosts (namespaces), 2 slots each")
    parser.add_argument("--jobs", type=int, default=400, help="jobs per drain")
    parser.add_argument("--json", action="store_true", help='print {"rows": [...]} only')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mm-fleet-") as tmp:
        rows = run(args.hosts, args.jobs, Path(tmp), log=None if args.json else _print)
    if args.json:
        print(json.dumps({"rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
