"""Reliability suite: mediamill under a spike, a SIGKILL storm with database restarts, a full disk, a mix of
damaged inputs and a hostile tenant — each on a database the scenario creates, with its figures in one table.

    .venv/bin/python benchmarks/reliability.py [--scenarios spike,chaos,disk,corrupt,hostile]
                                               [--backends sqlite,postgres] [--json] [--small]

Every PostgreSQL scenario runs on a cluster of its own on a spare port (``pg_createcluster``, root needed);
the shared server is never touched. ``--small`` runs the sizes the test suite uses (tests/reliability/).
The scenario functions return plain rows and never assert: the tests assert on the rows, the script prints
them (``--json``: ``{"rows": [...]}``). The figures and the machine they were measured on are kept in
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    pct,
    prepare_database,
    process_env,
    serve,
    start_process,
    stop_process,
    tus_upload,
)

TERMINAL = ("completed", "partial", "failed", "cancelled")
SPIKE_WORKFLOW = {"code": "WF-SPIKE", "name": "spike", "type": "generic", "queue": "spike",
                  "steps": [{"name": "first", "action": "noop"}, {"name": "second", "action": "noop"}]}
CHAOS_WORKFLOW = {"code": "WF-CHAOS", "name": "chaos", "type": "generic", "queue": "chaos",
                  "steps": [{"name": "thumb", "action": "create_thumbnail", "params": {"size": 64}},
                            {"name": "nap", "action": "sleep", "params": {"seconds": 0.3}},
                            {"name": "done", "action": "noop"}]}
# a worker's lease is short so that rescues happen within the run; a job is rescued at most this often
CHAOS_SETTINGS = {"lease_seconds": 2, "poll_interval": 0.2, "retry_base_seconds": 0.05, "max_rescues": 50}


# ------------------------------------------------------------------------------ databases
@contextlib.contextmanager
def database(backend: str, work: Path, admin_url: str | None = None) -> Iterator[str]:
    """A fresh database: SQLite in ``work``, or PostgreSQL on ``admin_url`` (default: a cluster of its own)."""
    if backend == "sqlite":
        yield f"sqlite:///{work / 'mediamill.db'}"
        return
    if admin_url:
        yield admin_url
        return
    from tests.pgcluster import own_postgres_cluster

    with own_postgres_cluster("max_connections=300") as cluster:
        yield cluster.url


def _engine(url: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.pool.NullPool)


def _counts(url: str, job_ids: list[int]) -> dict[str, int]:
    """Jobs by status among ``job_ids`` (missing ones under ``missing``)."""
    import sqlalchemy as sa

    from mediamill.store.tables import workflow_jobs

    engine = _engine(url)
    found: Counter[str] = Counter()
    try:
        with engine.connect() as conn:
            for i in range(0, len(job_ids), 1000):
                chunk = job_ids[i:i + 1000]
                rows = conn.execute(sa.select(workflow_jobs.c.status, sa.func.count())
                                    .where(workflow_jobs.c.id.in_(chunk)).group_by(workflow_jobs.c.status)).all()
                found.update({str(s): int(n) for s, n in rows})
    finally:
        engine.dispose()
    found["missing"] = len(job_ids) - sum(found.values())
    return dict(found)


def _duplicated_steps(url: str) -> int:
    """(job, step) pairs with more than one completed execution: a step must complete once."""
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM (SELECT job_id, step_id FROM step_executions WHERE status = 'completed' "
                "GROUP BY job_id, step_id HAVING count(*) > 1) AS d")).scalar() or 0)
    finally:
        engine.dispose()


def wait_terminal(url: str, job_ids: list[int], timeout: float, on_tick: Any = None) -> dict[str, int]:
    """Poll until every job of ``job_ids`` is terminal (or ``timeout``); returns the last counts."""
    import sqlalchemy as sa

    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(sa.exc.DBAPIError):  # the database may be restarting
            counts = _counts(url, job_ids)
            if sum(counts.get(s, 0) for s in TERMINAL) == len(job_ids):
                return counts
        if on_tick:
            on_tick(counts)
        time.sleep(0.25)
    return counts


def _open_counts(counts: dict[str, int]) -> int:
    return sum(n for s, n in counts.items() if s not in TERMINAL)


# ------------------------------------------------------------------------------ spike
async def _submit_all(url: str, keys: list[str], body: bytes, total: int) -> list[tuple[int, float, int | None]]:
    """``total`` JSON submits from ``len(keys)`` concurrent clients (one connection each)."""
    per_client = [total // len(keys) + (1 if i < total % len(keys) else 0) for i in range(len(keys))]
    results: list[tuple[int, float, int | None]] = []

    async def client(key: str, count: int) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1)) as c:
            for _ in range(count):
                t0 = time.perf_counter()
                try:
                    res = await c.post("/v1/jobs", content=body, headers=headers)
                    status, job = res.status_code, (res.json().get("id") if res.status_code == 202 else None)
                except httpx.HTTPError:
                    status, job = 0, None  # connection refused/reset: a refusal the client sees
                results.append((status, (time.perf_counter() - t0) * 1000, job))

    await asyncio.gather(*(client(k, n) for k, n in zip(keys, per_client, strict=True)))
    return results


def spike(backend: str, *, submits: int = 10_000, clients: int = 32, admin_url: str | None = None,
          drain_timeout: float = 600) -> dict[str, Any]:
    """``submits`` JSON submits (one stored upload) from ``clients`` concurrent clients against `serve`."""
    with tempfile.TemporaryDirectory(prefix="mm-spike-") as tmp, database(backend, Path(tmp), admin_url) as url:
        data = Path(tmp) / "data"
        # the limiter is policy, not capacity: raised so the spike measures what the server can take
        keys = prepare_database(data, url, [SPIKE_WORKFLOW], keys=clients)
        with serve(data, url, submit_rate_per_minute=10**7, metrics_dir="off") as base:
            upload_id = tus_upload(base, keys[0], b"spike input\n" * 32)
            body = json.dumps({"upload_id": upload_id, "workflow": SPIKE_WORKFLOW["code"]}).encode()
            t0 = time.perf_counter()
            results = asyncio.run(_submit_all(base, keys, body, submits))
            submit_s = time.perf_counter() - t0
            accepted = [job for status, _, job in results if status == 202 and job is not None]
            t1 = time.perf_counter()
            counts = wait_terminal(url, accepted, drain_timeout)
            drain_s = time.perf_counter() - t1
        latencies = [ms for _, ms, _ in results]
        refused = Counter(str(status) for status, _, _ in results if status != 202)
        return {"scenario": "spike", "backend": backend, "submits": submits, "clients": clients,
                "accepted": len(accepted), "refused": dict(refused), "internal": refused.get("500", 0),
                "submit_per_s": round(len(accepted) / submit_s, 1), "p50_ms": _r(pct(latencies, 0.5)),
                "p99_ms": _r(pct(latencies, 0.99)), "drain_s": round(drain_s, 1),
                "lost": counts.get("missing", 0) + _open_counts(counts),
                "not_completed": sum(n for s, n in counts.items() if s != "completed"),
                "duplicated": _duplicated_steps(url)}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ------------------------------------------------------------------------------ chaos
def _chaos_jobs(data: Path, url: str, jobs: int) -> list[int]:
    from PIL import Image

    from mediamill.config import Settings
    from mediamill.engine.submit import SubmitRequest, store_input_file, submit_many
    from mediamill.runtime import Runtime

    src = data / "chaos.jpg"
    Image.new("RGB", (320, 200), (30, 120, 200)).save(src, "JPEG")
    rt = Runtime(Settings(data_dir=data, database_url=url, **CHAOS_SETTINGS))
    try:
        inp = store_input_file(rt.storage, src)
        reqs = [SubmitRequest(job_input=inp, workflow_code=CHAOS_WORKFLOW["code"]) for _ in range(jobs)]
        return [j.id for j in submit_many(rt.engine, reqs)]
    finally:
        rt.close()


def _worker_ids(url: str) -> dict[int, str]:
    """pid -> worker id of the workers that are ready: their first heartbeat (after warming the step children
    and starting their loops) came after their registration."""
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return {int(pid): str(wid) for wid, pid in conn.execute(sa.text(
                "SELECT id, pid FROM workers WHERE heartbeat_at > started_at")).all()}
    finally:
        engine.dispose()


def _rescue_delays(url: str, kills: dict[str, float]) -> list[float]:
    """Seconds from each killed worker's SIGKILL to the rescue of each job it held."""
    import sqlalchemy as sa

    from mediamill.store.tables import job_events

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(job_events.c.data, job_events.c.created_at)
                                .where(job_events.c.event_type == "rescue")).all()
    finally:
        engine.dispose()
    delays = []
    for data, at in rows:
        owner = (data or {}).get("worker")
        if owner in kills:
            delays.append(at.replace(tzinfo=UTC).timestamp() - kills[owner])
    return delays


class _Storm:
    """Keeps ``n`` worker processes running and SIGKILLs a random started one every ``every`` seconds."""

    def __init__(self, data: Path, url: str, n: int, every: float) -> None:
        self.env = process_env(data, url, **CHAOS_SETTINGS)
        self.data, self.url, self.every = data, url, every
        self.procs = [self._start() for _ in range(n)]
        self.dead: list[Any] = []
        self.kills: dict[str, float] = {}
        self.next_kill = time.monotonic() + every

    def _start(self) -> Any:
        return start_process(self.data, self.env, "worker", "--pool", f"{CHAOS_WORKFLOW['queue']}=2")

    def tick(self) -> None:
        if time.monotonic() < self.next_kill:
            return
        self.next_kill = time.monotonic() + self.every
        with contextlib.suppress(Exception):  # the database may be restarting: kill at the next tick
            ready = _worker_ids(self.url)
            # only a worker that finished starting is a victim: on a slow machine a storm faster than start-up
            # would otherwise kill workers before they ever claim, and nothing would progress
            alive = [i for i, p in enumerate(self.procs) if p.pid in ready]
            if alive:
                self._kill(random.choice(alive), ready)

    def _kill(self, i: int, registered: dict[int, str]) -> None:
        victim = self.procs[i]
        self.kills[registered[victim.pid]] = datetime.now(UTC).timestamp()
        victim.kill()  # the worker only: its step child is orphaned, as in a real crash
        victim.wait(timeout=10)
        self.dead.append(victim)
        self.procs[i] = self._start()

    def stop(self) -> None:
        for proc in self.procs + self.dead:
            stop_process(proc, timeout=10)


def chaos(*, jobs: int = 200, workers: int = 3, kill_every: float = 2.0, pg_restarts: int = 2,
          timeout: float = 600) -> dict[str, Any]:
    """``jobs`` 3-step jobs, ``workers`` workers, one SIGKILLed every ``kill_every`` s, PostgreSQL restarted
    ``pg_restarts`` times (evenly over the run) on a cluster of its own."""
    from tests.pgcluster import own_postgres_cluster

    with tempfile.TemporaryDirectory(prefix="mm-chaos-") as tmp, own_postgres_cluster() as cluster:
        data, url = Path(tmp) / "data", cluster.url
        prepare_database(data, url, [CHAOS_WORKFLOW], **CHAOS_SETTINGS)
        job_ids = _chaos_jobs(data, url, jobs)
        storm = _Storm(data, url, workers, kill_every)
        restarts_at = [jobs * (i + 1) // (pg_restarts + 1) for i in range(pg_restarts)]

        def on_tick(counts: dict[str, int]) -> None:
            storm.tick()
            if restarts_at and counts and counts.get("completed", 0) >= restarts_at[0]:
                restarts_at.pop(0)
                cluster.restart()

        t0 = time.perf_counter()
        try:
            counts = wait_terminal(url, job_ids, timeout, on_tick)
        finally:
            storm.stop()
        elapsed = time.perf_counter() - t0
        delays = _rescue_delays(url, storm.kills)
        return {"scenario": "chaos", "backend": "postgres", "jobs": jobs, "workers": workers,
                "kills": len(storm.dead), "pg_restarts": pg_restarts - len(restarts_at),
                "completed": counts.get("completed", 0), "lost": counts.get("missing", 0),
                "stuck": _open_counts(counts), "failed": counts.get("failed", 0),
                "duplicated": _duplicated_steps(url), "outputs": _output_jobs(url, job_ids),
                "rescues": len(delays), "rescue_p50_s": _r(pct(delays, 0.5)),
                "rescue_max_s": _r(max(delays) if delays else None), "elapsed_s": round(elapsed, 1)}


def _output_jobs(url: str, job_ids: list[int]) -> int:
    """Jobs of ``job_ids`` with exactly one output (the thumbnail): outputs = jobs."""
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT job_id, count(*) FROM job_outputs GROUP BY job_id")).all()
    finally:
        engine.dispose()
    wanted = set(job_ids)
    return sum(1 for job, n in rows if job in wanted and n == 1)


# ------------------------------------------------------------------------------ main
SCENARIOS = ("spike", "chaos")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    small = args.small
    rows: list[dict[str, Any]] = []
    for name in args.scenarios.split(","):
        if name == "spike":
            for backend in args.backends.split(","):
                rows.append(spike(backend, submits=300 if small else args.submits, clients=8 if small else 32))
        elif name == "chaos":
            rows.append(chaos(jobs=30 if small else 200, pg_restarts=1 if small else 2))
        else:
            raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--submits", type=int, default=10_000)
    p.add_argument("--small", action="store_true", help="the sizes of the test suite")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = run(args)
    if args.json:
        print(json.dumps({"rows": rows}, indent=2))
        return
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
