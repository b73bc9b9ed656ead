"""Engine benchmark: mediamill's job engine on PostgreSQL and SQLite against pgqueuer, in one run.

    .venv/bin/python benchmarks/engine.py [--jobs 20000] [--systems mediamill-postgres,mediamill-sqlite,pgqueuer]
                                          [--json]

Every system gets the same work: ``--jobs`` no-op jobs (mediamill: a one-step ``noop`` workflow, all jobs
sharing one stored input; pgqueuer: an async no-op entrypoint). Per system:

- ``submit_per_s``: jobs submitted one by one, each in its own transaction (``submit_job`` /
  ``Queries.enqueue(one)``), from this process, while no worker runs.
- ``submit_batch_per_s``: the same number submitted in batches of ``--batch`` (500) per transaction
  (``submit_many`` / ``Queries.enqueue(lists)``).
  Before each timed submission this process runs one full garbage collection (for every system): a collection
  owed by an earlier phase (this process's heap holds mediamill's imports, ~100,000 objects, 40-80 ms to walk)
  would otherwise land in whichever phase crosses the collector's threshold, not in the one that caused it.
- ``drain_per_s``: after each of the two submissions the backlog is drained by 2 worker *processes*
  (``mediamill worker --pool bench=64``; for pgqueuer what ``pgq run`` runs: ``pgqueuer.run(factory)`` with
  its defaults, batch size 10, no concurrency cap, uvloop when installed). mediamill: the queue is paused
  before the workers start, the clock starts when it is resumed (both workers registered and heart-beating);
  pgqueuer: the workers connect, register their entrypoint and wait for a "go" line before ``run``. The
  drain ends when the queue table is empty (``media_queue`` / ``pgqueuer`` hold live entries only).
  Two drains per system; the **better** one is reported (the machine is shared), both are shown.
- ``latency_ms_median`` / ``latency_ms_p95``: with the 2 workers idle, ``--latency-jobs`` (200) jobs are
  submitted one after another, each once the previous one finished (plus ``--idle-gap``, 20 ms, so the
  workers are idle again). mediamill: ``started_at - submitted_at`` of the job (both written by the app
  on this machine; the columns ``operations.get_job`` shows, read at full precision because ``get_job``
  rounds to milliseconds). pgqueuer: its log's ``picked`` minus ``queued`` time (both ``NOW()`` in
  PostgreSQL). SQLite workers in other processes poll every ``MEDIAMILL_POLL_INTERVAL`` (1 s) unless woken;
  when the default misses the 5 ms target a variant with ``MEDIAMILL_POLL_INTERVAL=0.005`` is measured
  too and labelled as such (``--sqlite-variant auto|always|never``).

PostgreSQL: ``--pg-url`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``) is used to create and
drop a fresh database per system (``mm_bench_<random>``); ``synchronous_commit`` is left as the server has
it (on). SQLite: a fresh data directory in a temporary folder (the default URL, a file in the data dir).

The table also prints, per drain, what bounds it: worker CPU per job (user+system of the 2 worker
processes), PostgreSQL CPU per job (all ``postgres`` processes of the server, other users included),
commits per job (``pg_stat_database`` of the bench database) and WAL fsyncs per job (``pg_stat_wal``,
cluster-wide), and the delay from "resume" to the first pickup.

``--json`` prints one object: ``{"rows": [{"system", "jobs", "submit_per_s", "submit_batch_per_s",
"drain_per_s", "latency_ms_median", "latency_ms_p95"}, …]}``; notes (and the SQLite poll variant)
go to stderr.

The systems run one after another, so each is timed in its own minutes, and on a shared host neighbouring minutes
can differ by more than the systems do. ``--rounds N`` runs them all N times, every other round in reverse order
(A, B, C, then C, B, A, …), so each system meets early and late minutes alike; each figure is then the median of
the rounds (a round's drain: the better of its two), the latencies are those of every round together, and the
notes give every round's figures.

``mediamill-postgres-1m`` is ``mediamill-postgres`` on tables that already hold ``--history`` (1,000,000)
finished jobs — each with its step execution and two events, as the engine writes them, loaded with
``generate_series`` and analysed before the clock starts — so claims, finishes and pickups are measured
against a database that has been in use for a while. Its row carries ``history_jobs``; when both rows are
there the ratios to the empty-table figures are printed (the target: within 1.2×).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("mediamill-postgres", "mediamill-postgres-1m", "mediamill-sqlite", "pgqueuer")
QUEUE = "bench"
WORKFLOW = {"code": "WF-BENCH-NOOP", "name": "noop", "type": "generic", "queue": QUEUE,
            "steps": [{"name": "noop", "action": "noop"}]}
PGQ_ENTRYPOINT = "noop"
TERMINAL = ("completed", "partial", "failed", "cancelled")
_TICK = os.sysconf("SC_CLK_TCK")


# ============================================================================== measurements
@dataclass
class Drain:
    jobs: int
    seconds: float
    lag_s: float | None = None  # resume / go -> first pickup
    worker_cpu_s: float | None = None
    pg_cpu_s: float | None = None
    commits: int | None = None
    wal_syncs: int | None = None
    wal_records: int | None = None
    ok: int | None = None  # jobs that ended "completed"

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def note(self) -> str:
        parts = [f"{self.rate:,.0f}/s in {self.seconds:.2f} s"]
        if self.lag_s is not None:
            parts.append(f"first pickup {self.lag_s * 1000:.0f} ms after start "
                         f"({self.jobs / max(self.seconds - self.lag_s, 1e-9):,.0f}/s without it)")
        per = lambda v: v / self.jobs  # noqa: E731
        if self.worker_cpu_s is not None:
            parts.append(f"worker CPU {per(self.worker_cpu_s) * 1000:.3f} ms/job")
        if self.pg_cpu_s is not None:
            parts.append(f"postgres CPU {per(self.pg_cpu_s) * 1000:.3f} ms/job")
        if self.commits is not None:
            parts.append(f"{per(self.commits):.3f} commits/job")
        if self.wal_syncs is not None:
            parts.append(f"{per(self.wal_syncs):.3f} WAL fsyncs/job, {per(self.wal_records or 0):.1f} WAL records/job")
        if self.ok is not None and self.ok != self.jobs:
            parts.append(f"ONLY {self.ok} of {self.jobs} completed")
        return ", ".join(parts)


@dataclass
class Result:
    system: str
    jobs: int
    submit_per_s: float | None = None
    submit_batch_per_s: float | None = None
    drains: list[Drain] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_rows: list[dict[str, Any]] = field(default_factory=list)  # labelled variants (table only)
    history_jobs: int | None = None  # finished jobs already in the tables (mediamill-postgres-1m)
    drain_by_round: list[float] = field(default_factory=list)  # each round's better drain (--rounds > 1)

    @property
    def drain_per_s(self) -> float | None:
        if self.drain_by_round:
            return statistics.median(self.drain_by_round)
        return max(d.rate for d in self.drains) if self.drains else None

    def row(self) -> dict[str, Any]:
        row = {"system": self.system, "jobs": self.jobs, "submit_per_s": _r(self.submit_per_s, 1),
               "submit_batch_per_s": _r(self.submit_batch_per_s, 1), "drain_per_s": _r(self.drain_per_s, 1),
               "latency_ms_median": _r(_median(self.latency_ms), 2),
               "latency_ms_p95": _r(_pct(self.latency_ms, 0.95), 2)}
        if self.history_jobs is not None:
            row["history_jobs"] = self.history_jobs
        return row


def _r(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    data = sorted(values)
    return data[max(0, math.ceil(q * len(data)) - 1)]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / _TICK


def postgres_cpu() -> float | None:
    """CPU seconds of every local ``postgres`` process (the postmaster's reaped children included);
    None when the server is not visible from here."""
    total, seen = 0.0, False
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm") as fh:
                if fh.read().strip() != "postgres":
                    continue
            total += proc_cpu(int(name))
            seen = True
        except (OSError, ValueError):
            continue
    return total if seen else None


#: PostgreSQL (15 and later) publishes a busy backend's counters at most once a second and what is left when it
#: goes idle after its 10 s idle timer: the commits of the submissions before a drain would land in the drain's
#: figure unless the drain's first reading waits that long.
STATS_SETTLE_S = 11.0


class PgStats:
    """Counters of one database (commits) and of the cluster's WAL (fsyncs), read from a side connection."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def read(self) -> dict[str, int]:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        commits = self.conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                                    ).fetchone()
        wal = self.conn.execute("SELECT wal_sync, wal_records FROM pg_stat_wal").fetchone()
        return {"commits": int(commits[0]) if commits else 0, "wal_syncs": int(wal[0]) if wal else 0,
                "wal_records": int(wal[1]) if wal else 0}

    def close(self) -> None:
        self.conn.close()


class Poller:
    """Plain autocommit reads for the benchmark's own polling. On SQLite a stdlib connection, because the
    engine's connections open every transaction with BEGIN IMMEDIATE (a write lock)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite"):
            self.conn: Any = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=30)
            self.mark = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
            self.mark = "%s"

    def one(self, sql: str, *params: Any) -> Any:
        row = self.conn.execute(sql.replace("?", self.mark), params).fetchone()
        return None if row is None else row[0]

    def all(self, sql: str, *params: Any) -> list[Any]:
        return list(self.conn.execute(sql.replace("?", self.mark), params).fetchall())

    def close(self) -> None:
        self.conn.close()


def wait_empty(count: Callable[[], int], jobs: int, timeout: float) -> float:
    """Poll until ``count()`` is 0; returns the perf_counter time it was seen empty. Polls less often
    while the backlog is large, so the poller does not steal the workers' CPU."""
    deadline = time.perf_counter() + timeout
    while True:
        left = count()
        now = time.perf_counter()
        if left == 0:
            return now
        if now > deadline:
            raise TimeoutError(f"drain timed out with {left} of {jobs} jobs left")
        time.sleep(min(0.1, max(0.005, left / 40_000)))


# ============================================================================== processes
def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError("worker did not report ready")
    return proc.stdout.readline()


def stop_processes(procs: list[subprocess.Popen[Any]], timeout: float = 30) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _tail(path: Path, n: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"mm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def settle_heap() -> None:
    """A full collection before a timed phase (see the module's docstring)."""
    gc.collect()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}


def log(msg: str) -> None:
    print(f"[engine-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================== mediamill
class MediamillBench:
    def __init__(self, system: str, data_dir: Path, database_url: str, args: argparse.Namespace) -> None:
        from mediamill.config import Settings
        from mediamill.engine.submit import store_input_file
        from mediamill.runtime import Runtime
        from mediamill.store import workflow_repo
        from mediamill.workflows.loader import validate_document

        self.system, self.data_dir, self.url, self.args = system, data_dir, database_url, args
        self.rt = Runtime(Settings(data_dir=data_dir, database_url=database_url))
        # migrate + the built-in workflows, before the workers start: two ``mediamill worker`` processes
        # starting together on a fresh database race to install the built-ins (a UniqueViolation)
        self.rt.prepare()
        self.engine = self.rt.engine
        self.is_pg = self.rt.is_postgres
        with self.engine.begin() as conn:
            workflow_repo.save_version(conn, validate_document(WORKFLOW), author="bench")
        src = data_dir / "bench-input.txt"
        src.write_text("benchmark input\n" * 64)
        self.job_input = store_input_file(self.rt.storage, src)
        self.poller = Poller(self.rt.settings.effective_database_url)
        self.stats = PgStats(database_url) if self.is_pg else None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_env: dict[str, str] = {}
        self._n_started = 0

    def close(self) -> None:
        stop_processes(self.workers)
        self.poller.close()
        if self.stats:
            self.stats.close()
        self.rt.close()

    def _req(self) -> Any:
        from mediamill.engine.submit import SubmitRequest

        return SubmitRequest(job_input=self.job_input, workflow_code=WORKFLOW["code"])

    def load_history(self, n: int) -> None:
        """``n`` finished jobs of the bench workflow, with a step execution and two events each (PostgreSQL)."""
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            wf_id, step_id = conn.execute(sa.text(
                "SELECT d.id, s.id FROM workflow_definitions d JOIN workflow_steps s ON s.workflow_id = d.id "
                "WHERE d.workflow_code = :c ORDER BY d.id DESC LIMIT 1"), {"c": WORKFLOW["code"]}).one()
            params = {"n": n, "wf": wf_id, "step": step_id, "key": self.job_input.storage_key}
            conn.execute(sa.text(
                "INSERT INTO workflow_jobs (job_code, workflow_id, status, priority, tenant_id, workflow_version, "
                " queue_name, input_key, input_mime, input_size, submitted_at, started_at, completed_at, "
                " finished_at, updated_at, current_step, progress_percent) "
                "SELECT 'JOB-HIST-' || g, :wf, CASE WHEN g % 20 = 0 THEN 'failed' ELSE 'completed' END, 5, 'default', "
                " 1, :q, :key, 'text/plain', 1024, t, t + interval '10 ms', "
                " CASE WHEN g % 20 = 0 THEN NULL ELSE t + interval '20 ms' END, t + interval '20 ms', "
                " t + interval '20 ms', 1, 100 "
                "FROM generate_series(1, :n) g, LATERAL (SELECT now() - interval '7 days' "
                " + (g * interval '1 ms') * (7 * 86400000 / :n) AS t) ts"), {**params, "q": QUEUE})
            conn.execute(sa.text(
                "INSERT INTO step_executions (job_id, step_id, status, started_at, completed_at, action, step_name, "
                " duration_ms, worker_id) "
                "SELECT id, :step, status, started_at, finished_at, 'noop', 'noop', 10, 'history' "
                "FROM workflow_jobs WHERE job_code LIKE 'JOB-HIST-%'"), params)
            conn.execute(sa.text(
                "INSERT INTO job_events (job_id, tenant_id, event_type, step_name, data, created_at) "
                "SELECT id, 'default', e.kind, e.step, e.data::json, finished_at FROM workflow_jobs, "
                " (VALUES ('step', 'noop', '{\"status\": \"completed\"}'), "
                "         ('status', NULL, '{\"status\": \"completed\", \"final\": true}')) AS e(kind, step, data) "
                "WHERE job_code LIKE 'JOB-HIST-%'"), params)
        with self.engine.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            auto.execute(sa.text("ANALYZE workflow_jobs; ANALYZE step_executions; ANALYZE job_events; "
                                 "ANALYZE media_queue"))
            # the history's pages written out now, not by the checkpointer while the submits are timed
            auto.execute(sa.text("CHECKPOINT"))

    def _max_id(self) -> int:
        return int(self.poller.one("SELECT coalesce(max(id), 0) FROM workflow_jobs") or 0)

    # -------------------------------------------------------------- submit
    def submit_single(self, n: int) -> float:
        from mediamill.engine.submit import submit_job

        settle_heap()
        t0 = time.perf_counter()
        for _ in range(n):
            submit_job(self.engine, self._req())
        return n / (time.perf_counter() - t0)

    def submit_batch(self, n: int) -> float:
        from mediamill.engine.submit import submit_many

        size = self.args.batch
        settle_heap()
        t0 = time.perf_counter()
        for start in range(0, n, size):
            submit_many(self.engine, [self._req() for _ in range(min(size, n - start))])
        return n / (time.perf_counter() - t0)

    # -------------------------------------------------------------- workers
    def start_workers(self, env_extra: dict[str, str] | None = None) -> None:
        from mediamill.engine import operations as ops

        env = {**_clean_env(), "MEDIAMILL_DATA_DIR": str(self.data_dir),
               "MEDIAMILL_DATABASE_URL": self.url or self.rt.settings.effective_database_url, **(env_extra or {})}
        self.worker_env = env
        self.workers = []
        for i in range(self.args.workers):
            self._n_started += 1
            logf = (self.data_dir / f"worker-{self._n_started}.log").open("wb")
            self.workers.append(subprocess.Popen(
                [sys.executable, "-m", "mediamill.cli.main", "worker", "--pool", f"{QUEUE}={self.args.concurrency}",
                 "--name", f"bench{i}"], env=env, cwd=str(self.data_dir), stdout=logf, stderr=subprocess.STDOUT))
            logf.close()
        pids = {p.pid for p in self.workers}
        deadline = time.monotonic() + 90
        while True:
            for p in self.workers:
                if p.poll() is not None:
                    raise RuntimeError(f"worker {p.pid} exited with {p.returncode}:\n"
                                       f"{_tail(self.data_dir / f'worker-{self._n_started}.log')}")
            listed = ops.list_workers(self.engine, lease_seconds=self.rt.settings.lease_seconds)
            live = [w for w in listed if w["pid"] in pids]
            # the first heartbeat comes from the lifeline thread, started after the claimer
            if len(live) == len(pids) and all((w["heartbeat_at"] or "") > (w["started_at"] or "") for w in live):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not register within 90 s")
            time.sleep(0.05)
        time.sleep(self.args.settle)

    def stop_workers(self) -> None:
        stop_processes(self.workers)
        self.workers = []

    # -------------------------------------------------------------- drain
    def drain(self, n: int, first_id: int) -> Drain:
        from mediamill.engine import operations as ops
        from mediamill.store.timeutil import utcnow

        self.start_workers()
        if self.stats:
            time.sleep(STATS_SETTLE_S)
        cpu0 = sum(proc_cpu(p.pid) for p in self.workers)
        pg0 = postgres_cpu() if self.is_pg else None
        st0 = self.stats.read() if self.stats else None
        wall0 = utcnow()
        t0 = time.perf_counter()
        ops.resume_queue(self.engine, QUEUE)
        t1 = wait_empty(lambda: int(self.poller.one("SELECT count(*) FROM media_queue")), n,
                        timeout=max(300.0, n / 20))
        cpu1 = sum(proc_cpu(p.pid) for p in self.workers)
        pg1 = postgres_cpu() if self.is_pg else None
        self.stop_workers()
        ops.pause_queue(self.engine, QUEUE)
        d = Drain(jobs=n, seconds=t1 - t0, worker_cpu_s=cpu1 - cpu0)
        if pg0 is not None and pg1 is not None:
            d.pg_cpu_s = pg1 - pg0
        if self.stats and st0:
            time.sleep(1.2)  # backends report their counters at most once a second
            st1 = self.stats.read()
            d.commits = st1["commits"] - st0["commits"]
            d.wal_syncs = st1["wal_syncs"] - st0["wal_syncs"]
            d.wal_records = st1["wal_records"] - st0["wal_records"]
        first = self.poller.one("SELECT min(started_at) FROM workflow_jobs WHERE id > ?", first_id)
        if first is not None:
            d.lag_s = (_as_dt(first) - wall0).total_seconds()
        d.ok = int(self.poller.one("SELECT count(*) FROM workflow_jobs WHERE id > ? AND status = 'completed'",
                                   first_id))
        return d

    # -------------------------------------------------------------- latency
    def latency(self, n: int, env_extra: dict[str, str] | None = None) -> list[float]:
        """Pickup latency of idle workers over ``n`` sequential jobs (ms)."""
        from mediamill.engine import operations as ops
        from mediamill.engine.submit import submit_job

        ops.resume_queue(self.engine, QUEUE)
        self.start_workers(env_extra)
        for _ in range(3):  # warm-up (connections, caches), not counted
            self._one_job(submit_job)
        ids = [self._one_job(submit_job) for _ in range(n)]
        self.stop_workers()
        ops.pause_queue(self.engine, QUEUE)
        out: list[float] = []
        for start in range(0, len(ids), 100):
            chunk = ids[start:start + 100]
            marks = ",".join("?" * len(chunk))
            for sub, started in self.poller.all(
                    f"SELECT submitted_at, started_at FROM workflow_jobs WHERE id IN ({marks})", *chunk):
                out.append((_as_dt(started) - _as_dt(sub)).total_seconds() * 1000)
        return out

    def _one_job(self, submit_job: Any) -> int:
        time.sleep(self.args.idle_gap)
        job = submit_job(self.engine, self._req())
        deadline = time.monotonic() + 30
        while self.poller.one("SELECT status FROM workflow_jobs WHERE id = ?", job.id) not in TERMINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job.id} did not finish within 30 s")
            time.sleep(0.002)
        return int(job.id)


def _as_dt(value: Any) -> Any:
    from datetime import datetime

    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value.replace(tzinfo=None) if value.tzinfo else value


def run_mediamill(system: str, args: argparse.Namespace) -> Result:
    from mediamill.engine import operations as ops

    res = Result(system, args.jobs)
    n = args.jobs
    with contextlib.ExitStack() as stack:
        # a short path: SQLite workers may listen on UNIX sockets beside the database (108-byte limit)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmb-", dir=args.tmp_dir)))
        data_dir = tmp / "data"
        if system.startswith("mediamill-postgres"):
            url = stack.enter_context(postgres_database(args.pg_url))
        else:
            url = f"sqlite:///{(data_dir / 'mediamill.db').resolve()}"
        log(f"{system}: preparing ({url})")
        bench = MediamillBench(system, data_dir, url, args)
        stack.callback(bench.close)
        try:
            if system == "mediamill-postgres-1m":
                t0 = time.perf_counter()
                bench.load_history(args.history)
                res.history_jobs = args.history
                log(f"{system}: {args.history:,} finished jobs loaded in {time.perf_counter() - t0:.1f} s")
            ops.pause_queue(bench.engine, QUEUE)
            first = bench._max_id()
            log(f"{system}: submitting {n} jobs one by one")
            res.submit_per_s = bench.submit_single(n)
            log(f"{system}: drain 1")
            res.drains.append(bench.drain(n, first))
            log(f"{system}: drain 1: {res.drains[-1].note()}")
            first = bench._max_id()
            log(f"{system}: submitting {n} jobs in batches of {args.batch}")
            res.submit_batch_per_s = bench.submit_batch(n)
            log(f"{system}: drain 2")
            res.drains.append(bench.drain(n, first))
            log(f"{system}: drain 2: {res.drains[-1].note()}")
            log(f"{system}: pickup latency over {args.latency_jobs} sequential jobs")
            res.latency_ms = bench.latency(args.latency_jobs)
            log(f"{system}: latency median {_median(res.latency_ms):.2f} ms, p95 {_pct(res.latency_ms, 0.95):.2f} ms")
            if not bench.is_pg:
                median = _median(res.latency_ms) or 0.0
                want = args.sqlite_variant == "always" or (args.sqlite_variant == "auto" and median > 5.0)
                if want:
                    log(f"{system}: latency variant with MEDIAMILL_POLL_INTERVAL=0.005")
                    lat = bench.latency(args.latency_jobs, {"MEDIAMILL_POLL_INTERVAL": "0.005"})
                    res.extra_rows.append({
                        "system": f"{system} (MEDIAMILL_POLL_INTERVAL=0.005, latency only)", "jobs": args.latency_jobs,
                        "latency_ms_median": _r(_median(lat), 2), "latency_ms_p95": _r(_pct(lat, 0.95), 2)})
        except Exception as exc:
            logs = sorted(data_dir.glob("worker-*.log"))
            res.notes.append(f"FAILED: {type(exc).__name__}: {exc}"
                             + (f"\nlast worker log:\n{_tail(logs[-1])}" if logs else ""))
            log(f"{system}: {res.notes[-1]}")
    return res


# ============================================================================== pgqueuer
async def _pgq_driver(dsn: str) -> Any:
    """pgqueuer's driver: asyncpg (its quick-start default) when installed, else psycopg's async connection."""
    try:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver

        return AsyncpgDriver(await asyncpg.connect(dsn))
    except ImportError:
        import psycopg
        from pgqueuer.db import PsycopgDriver

        return PsycopgDriver(await psycopg.AsyncConnection.connect(dsn, autocommit=True))


def _pgq_driver_name() -> str:
    try:
        import asyncpg  # noqa: F401

        return "asyncpg"
    except ImportError:
        return "psycopg"


async def _close_driver(driver: Any) -> None:
    conn = getattr(driver, "_connection", None) or getattr(driver, "connection", None)
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()


def pgq_worker_main(dsn: str) -> None:
    """One pgqueuer worker process, as ``pgq run`` runs it (defaults; uvloop when installed);
    it says "ready" once connected with its entrypoint registered and starts on a "go" line."""
    from pgqueuer import PgQueuer
    from pgqueuer import run as pgq_run
    from pgqueuer.adapters.cli.cli import asyncio_run

    @contextlib.asynccontextmanager
    async def factory() -> Any:
        driver = await _pgq_driver(dsn)
        pgq = PgQueuer(driver)

        @pgq.entrypoint(PGQ_ENTRYPOINT)
        async def noop(job: Any) -> None:
            return None

        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        try:
            yield pgq
        finally:
            await _close_driver(driver)

    asyncio_run(pgq_run(factory))


class PgqBench:
    def __init__(self, dsn: str, tmp: Path, args: argparse.Namespace) -> None:
        self.dsn, self.tmp, self.args = dsn, tmp, args
        self.workers: list[subprocess.Popen[str]] = []
        self.poller = Poller(dsn)
        self.stats = PgStats(dsn)
        self._n = 0

    async def setup(self) -> None:
        from pgqueuer.queries import Queries

        self.driver = await _pgq_driver(self.dsn)
        self.q = Queries(self.driver)
        await self.q.install()  # default durability: durable (all tables logged)

    async def close(self) -> None:
        stop_processes(self.workers)
        await _close_driver(self.driver)
        self.poller.close()
        self.stats.close()

    async def enqueue_single(self, n: int) -> float:
        settle_heap()
        t0 = time.perf_counter()
        for _ in range(n):
            await self.q.enqueue(PGQ_ENTRYPOINT, None, 0)
        return n / (time.perf_counter() - t0)

    async def enqueue_batch(self, n: int) -> float:
        size = self.args.batch
        settle_heap()
        t0 = time.perf_counter()
        for start in range(0, n, size):
            k = min(size, n - start)
            await self.q.enqueue([PGQ_ENTRYPOINT] * k, [None] * k, [0] * k)
        return n / (time.perf_counter() - t0)

    def start_workers(self) -> None:
        self.workers = []
        for _ in range(self.args.workers):
            self._n += 1
            logf = (self.tmp / f"pgq-worker-{self._n}.log").open("w")
            self.workers.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--pgq-worker", self.dsn], cwd=str(self.tmp),
                env=_clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, text=True))
            logf.close()
        for p in self.workers:
            line = _read_line(p, 60).strip()
            if line != "ready":
                raise RuntimeError(f"pgqueuer worker said {line!r}:\n{_tail(self.tmp / f'pgq-worker-{self._n}.log')}")

    def go(self) -> None:
        for p in self.workers:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()

    def stop_workers(self) -> None:
        stop_processes(self.workers)
        self.workers = []

    def drain(self, n: int, first_log_id: int) -> Drain:
        self.start_workers()
        time.sleep(max(self.args.settle, STATS_SETTLE_S))
        cpu0 = sum(proc_cpu(p.pid) for p in self.workers)
        pg0 = postgres_cpu()
        st0 = self.stats.read()
        wall0 = self.poller.one("SELECT clock_timestamp()")
        t0 = time.perf_counter()
        self.go()
        t1 = wait_empty(lambda: int(self.poller.one("SELECT count(*) FROM pgqueuer")), n,
                        timeout=max(300.0, n / 20))
        cpu1 = sum(proc_cpu(p.pid) for p in self.workers)
        pg1 = postgres_cpu()
        self.stop_workers()
        d = Drain(jobs=n, seconds=t1 - t0, worker_cpu_s=cpu1 - cpu0)
        if pg0 is not None and pg1 is not None:
            d.pg_cpu_s = pg1 - pg0
        time.sleep(1.2)
        st1 = self.stats.read()
        d.commits = st1["commits"] - st0["commits"]
        d.wal_syncs = st1["wal_syncs"] - st0["wal_syncs"]
        d.wal_records = st1["wal_records"] - st0["wal_records"]
        first = self.poller.one("SELECT min(created) FROM pgqueuer_log WHERE id > ? AND status = 'picked'",
                                first_log_id)
        if first is not None:
            d.lag_s = (first - wall0).total_seconds()
        d.ok = int(self.poller.one("SELECT count(*) FROM pgqueuer_log WHERE id > ? AND status = 'successful'",
                                   first_log_id))
        return d

    def max_log_id(self) -> int:
        return int(self.poller.one("SELECT coalesce(max(id), 0) FROM pgqueuer_log") or 0)

    async def latency(self, n: int) -> list[float]:
        self.start_workers()
        self.go()
        await asyncio.sleep(self.args.settle)
        ids: list[int] = []
        for i in range(n + 3):
            await asyncio.sleep(self.args.idle_gap)
            [job_id] = await self.q.enqueue(PGQ_ENTRYPOINT, None, 0)
            deadline = time.monotonic() + 30
            while self.poller.one("SELECT 1 FROM pgqueuer WHERE id = ?", job_id) is not None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"pgqueuer job {job_id} did not finish within 30 s")
                await asyncio.sleep(0.002)
            if i >= 3:  # the first 3 warm up
                ids.append(int(job_id))
        self.stop_workers()
        rows = self.poller.all("SELECT job_id, status, created FROM pgqueuer_log WHERE job_id = ANY(?) "
                               "AND status IN ('queued', 'picked')", ids)
        queued = {j: c for j, s, c in rows if s == "queued"}
        picked = {j: c for j, s, c in rows if s == "picked"}
        return [(picked[j] - queued[j]).total_seconds() * 1000 for j in ids if j in queued and j in picked]


def side_by_side(stack: contextlib.ExitStack, args: argparse.Namespace,
                 tmp: Path) -> tuple[MediamillBench, str, asyncio.AbstractEventLoop, PgqBench]:
    """mediamill and pgqueuer installed in one new database (dropped when ``stack`` closes), for the scripts that
    time the two in alternating rounds: mediamill's bench, the database's psycopg DSN, the event loop pgqueuer's
    calls run on, and pgqueuer's bench."""
    url = stack.enter_context(postgres_database(args.pg_url))
    bench = MediamillBench("mediamill-postgres", tmp / "data", url, args)
    stack.callback(bench.close)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    loop = asyncio.new_event_loop()
    pgq = PgqBench(dsn, tmp, args)
    loop.run_until_complete(pgq.setup())
    stack.callback(lambda: loop.run_until_complete(pgq.close()))
    return bench, dsn, loop, pgq


async def _run_pgqueuer_async(args: argparse.Namespace, dsn: str, tmp: Path, res: Result) -> None:
    bench = PgqBench(dsn, tmp, args)
    await bench.setup()
    try:
        n = args.jobs
        log(f"pgqueuer: enqueueing {n} jobs one by one ({_pgq_driver_name()} driver)")
        first = bench.max_log_id()
        res.submit_per_s = await bench.enqueue_single(n)
        log("pgqueuer: drain 1")
        res.drains.append(bench.drain(n, first))
        log(f"pgqueuer: drain 1: {res.drains[-1].note()}")
        first = bench.max_log_id()
        log(f"pgqueuer: enqueueing {n} jobs in batches of {args.batch}")
        res.submit_batch_per_s = await bench.enqueue_batch(n)
        log("pgqueuer: drain 2")
        res.drains.append(bench.drain(n, first))
        log(f"pgqueuer: drain 2: {res.drains[-1].note()}")
        log(f"pgqueuer: pickup latency over {args.latency_jobs} sequential jobs")
        res.latency_ms = await bench.latency(args.latency_jobs)
        log(f"pgqueuer: latency median {_median(res.latency_ms):.2f} ms, p95 {_pct(res.latency_ms, 0.95):.2f} ms")
    finally:
        await bench.close()


def run_pgqueuer(args: argparse.Namespace) -> Result:
    res = Result("pgqueuer", args.jobs)
    try:
        import pgqueuer  # noqa: F401
    except ImportError:
        res.notes.append("pgqueuer is not installed (pip install -e '.[bench]')")
        return res
    res.notes.append(f"pgqueuer driver: {_pgq_driver_name()}; workers: pgqueuer.run defaults (batch_size 10, "
                     "no max_concurrent_tasks), durable tables")
    with tempfile.TemporaryDirectory(prefix="mmb-pgq-", dir=args.tmp_dir) as tmp, \
            postgres_database(args.pg_url) as dsn:
        try:
            asyncio.run(_run_pgqueuer_async(args, dsn, Path(tmp), res))
        except Exception as exc:
            logs = sorted(Path(tmp).glob("pgq-worker-*.log"))
            res.notes.append(f"FAILED: {type(exc).__name__}: {exc}"
                             + (f"\nlast worker log:\n{_tail(logs[-1])}" if logs else ""))
            log(f"pgqueuer: {res.notes[-1]}")
    return res


# ============================================================================== output
COLUMNS = ("system", "jobs", "submit_per_s", "submit_batch_per_s", "drain_per_s", "latency_ms_median",
           "latency_ms_p95")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return str(v)


def _environment() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
        dirty = [d[3:] for d in dirty if d.strip()]
    except (OSError, subprocess.SubprocessError):
        head, dirty = "?", []
    load = os.getloadavg()
    return (f"mediamill @ {head}" + (f" + uncommitted changes in {len(dirty)} src file(s)" if dirty else "")
            + f"; {os.cpu_count()} CPUs, load average {load[0]:.1f} at the end")


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    rows = [r.row() for r in results]
    extra = [x for r in results for x in r.extra_rows]
    notes = []
    for r in results:
        for i, d in enumerate(r.drains, 1):
            notes.append(f"{r.system} drain {i} ({'after one-by-one submit' if i % 2 else 'after batch submit'}): "
                         f"{d.note()}")
        notes += [f"{r.system}: {n}" for n in r.notes]
    better = ("the better of the 2 drains" if args.rounds == 1
              else f"the median of the {args.rounds} rounds' better drain")
    notes.append(f"drain_per_s is {better}; latency = submitted -> picked up by an idle worker")
    notes.append(_environment())
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Engine benchmark: {args.jobs:,} no-op jobs, {args.workers} worker processes")
        heads = ("system", "jobs", "submit/s", "submit batch/s", "drain/s", "latency median ms", "latency p95 ms")
        for h in heads:
            table.add_column(h, justify="left" if h == "system" else "right")
        for row in rows + extra:
            table.add_row(*(_fmt(row.get(c)) for c in COLUMNS))
        console = Console(width=max(120, shutil.get_terminal_size((160, 20)).columns))
        console.print(table)
        for n in notes:
            console.print(f"- {n}", highlight=False, soft_wrap=True)
    except ImportError:
        print(" | ".join(COLUMNS))
        for row in rows + extra:
            print(" | ".join(_fmt(row.get(c)) for c in COLUMNS))
        for n in notes:
            print(f"- {n}")


# ============================================================================== main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per submission / drain (default 20000)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--pg-url", default=os.environ.get("MEDIAMILL_BENCH_PG_URL",
                                                      "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="an admin URL of the PostgreSQL server (bench databases are created and dropped)")
    p.add_argument("--batch", type=int, default=500, help="jobs per batch submission (default 500)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run every system this many times, every other round in reverse order; each figure the "
                        "median of the rounds (default 1)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--concurrency", type=int, default=64, help="mediamill --pool bench=N (default 64)")
    p.add_argument("--latency-jobs", type=int, default=200)
    p.add_argument("--idle-gap", type=float, default=0.02, help="seconds between a finished job and the next")
    p.add_argument("--settle", type=float, default=0.5, help="seconds after the workers are up before a drain")
    p.add_argument("--sqlite-variant", choices=("auto", "always", "never"), default="auto",
                   help="also measure SQLite latency with MEDIAMILL_POLL_INTERVAL=0.005 (auto: when the default "
                        "misses 5 ms)")
    p.add_argument("--history", type=int, default=1_000_000,
                   help="finished jobs loaded before mediamill-postgres-1m is measured (default 1000000)")
    p.add_argument("--tmp-dir", default="/tmp", help="where the SQLite data dirs go (keep the path short)")
    p.add_argument("--pgq-worker", metavar="DSN", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown system(s): {', '.join(sorted(unknown))}; choose from {', '.join(SYSTEMS)}")
    if args.jobs <= 0 or args.batch <= 0 or args.latency_jobs <= 0 or args.rounds <= 0:
        p.error("--jobs, --batch, --latency-jobs and --rounds must be positive")
    return args


def log_history_ratios(results: list[Result]) -> None:
    """How much the full tables cost: each figure of mediamill-postgres-1m over the empty-table one."""
    rows = {r.system: r.row() for r in results}
    full, empty = rows.get("mediamill-postgres-1m"), rows.get("mediamill-postgres")
    if not full or not empty:
        return
    parts = []
    for key, higher_is_better in (("submit_per_s", True), ("submit_batch_per_s", True), ("drain_per_s", True),
                                  ("latency_ms_median", False), ("latency_ms_p95", False)):
        a, b = full.get(key), empty.get(key)
        if a and b:
            cost = b / a if higher_is_better else a / b  # > 1: the full tables are slower
            parts.append(f"{key} {cost:.2f}×")
    log(f"with {full.get('history_jobs', 0):,} finished jobs, slower by: " + ", ".join(parts) + " (target ≤ 1.20×)")


def merge_rounds(rounds: list[Result]) -> Result:
    """One system's results over ``--rounds``: each figure the median of the rounds' (a round's drain the better
    of its two), the pickup latencies of every round together."""
    if len(rounds) == 1:
        return rounds[0]
    first = rounds[0]
    out = Result(first.system, first.jobs, history_jobs=first.history_jobs,
                 drains=[d for r in rounds for d in r.drains], latency_ms=[x for r in rounds for x in r.latency_ms],
                 notes=list(dict.fromkeys(n for r in rounds for n in r.notes)),
                 extra_rows=[x for r in rounds for x in r.extra_rows])
    out.submit_per_s = _median([r.submit_per_s for r in rounds if r.submit_per_s])
    out.submit_batch_per_s = _median([r.submit_batch_per_s for r in rounds if r.submit_batch_per_s])
    out.drain_by_round = [d for d in (r.drain_per_s for r in rounds) if d]

    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}/s"

    figures = "; ".join(f"round {i}: submit {rate(r.submit_per_s)}, batch {rate(r.submit_batch_per_s)}, "
                        f"drain {rate(r.drain_per_s)}" for i, r in enumerate(rounds, 1))
    out.notes.append(f"median of {len(rounds)} rounds ({figures})")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pgq_worker:
        pgq_worker_main(args.pgq_worker)
        return 0
    runs: dict[str, list[Result]] = {system: [] for system in args.systems}
    for k in range(args.rounds):
        order = args.systems if k % 2 == 0 else args.systems[::-1]  # (every other round reversed)
        for system in order:
            if args.rounds > 1:
                log(f"round {k + 1} of {args.rounds}: {system}")
            runs[system].append(run_pgqueuer(args) if system == "pgqueuer" else run_mediamill(system, args))
    results = [merge_rounds(rounds) for rounds in runs.values()]
    log_history_ratios(results)
    if args.json:
        print(json.dumps({"rows": [r.row() for r in results]}))
        for r in results:
            for x in r.extra_rows:
                log(f"variant: {json.dumps(x)}")
            for i, d in enumerate(r.drains, 1):
                log(f"{r.system} drain {i}: {d.note()}")
            for n in r.notes:
                log(f"{r.system}: {n}")
    else:
        print_table(results, args)
    return 0 if all(not any(n.startswith("FAILED") for n in r.notes) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
