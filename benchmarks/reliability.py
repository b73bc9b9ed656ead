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
import contextlib
import json
import os
import random
import subprocess
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
    machine_cpu,
    pct,
    prepare_database,
    process_cpu,
    process_env,
    serve,
    serve_process,
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


@contextlib.contextmanager
def _connection(url: str) -> Iterator[Any]:
    """A connection to ``url`` on an engine of its own, disposed of afterwards (no pooled session outlives a
    look, and the cluster of a run may restart between looks)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _counts(url: str, job_ids: list[int]) -> dict[str, int]:
    """Jobs by status among ``job_ids`` (missing ones under ``missing``)."""
    import sqlalchemy as sa

    from mediamill.store.tables import workflow_jobs

    found: Counter[str] = Counter()
    with _connection(url) as conn:
        for i in range(0, len(job_ids), 1000):
            chunk = job_ids[i:i + 1000]
            rows = conn.execute(sa.select(workflow_jobs.c.status, sa.func.count())
                                .where(workflow_jobs.c.id.in_(chunk)).group_by(workflow_jobs.c.status)).all()
            found.update({str(s): int(n) for s, n in rows})
    found["missing"] = len(job_ids) - sum(found.values())
    return dict(found)


def _duplicated_steps(url: str) -> int:
    """(job, step) pairs with more than one completed execution: a step must complete once."""
    import sqlalchemy as sa

    with _connection(url) as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT job_id, step_id FROM step_executions WHERE status = 'completed' "
            "GROUP BY job_id, step_id HAVING count(*) > 1) AS d")).scalar() or 0)


def _failures(url: str) -> list[str]:
    """Why each failed job failed (``job id: error class: message``): a run that fails a job says why."""
    import sqlalchemy as sa

    with _connection(url) as conn:
        rows = conn.execute(sa.text("SELECT id, error_class, error_message FROM workflow_jobs "
                                    "WHERE status = 'failed' ORDER BY id")).all()
    return [f"job {job}: {cls}: {(msg or '')[:300]}" for job, cls, msg in rows]


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
def _submit_all(url: str, keys: list[str], body: bytes, total: int) -> dict[str, Any]:
    """``total`` JSON submits from ``len(keys)`` concurrent clients (one connection and key each), sent by
    benchmarks/loadgen.py in a process of its own; its results (``results``: status, ms, job id each),
    ``elapsed_s`` and ``cpu_s``."""
    plan = json.dumps({"url": url, "path": "/v1/jobs", "body": body.decode(), "keys": keys, "total": total})
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("loadgen.py"))], input=plan.encode(),
                          capture_output=True, check=True, timeout=3600)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def spike(backend: str, *, submits: int = 10_000, clients: int = 32, admin_url: str | None = None,
          drain_timeout: float = 600) -> dict[str, Any]:
    """``submits`` JSON submits (one stored upload) from ``clients`` concurrent clients against `serve`.

    Besides the outcome, the row says what the CPU did while the submits ran: the server's and the load
    generator's CPU milliseconds per accepted submit, and how many cores the whole machine kept busy
    (other work on a shared machine shows there as ``machine_busy_cores`` above server + generator).
    """
    with tempfile.TemporaryDirectory(prefix="mm-spike-") as tmp, database(backend, Path(tmp), admin_url) as url:
        data = Path(tmp) / "data"
        # the limiter is policy, not capacity: raised so the spike measures what the server can take
        keys = prepare_database(data, url, [SPIKE_WORKFLOW], keys=clients)
        with serve_process(data, url, submit_rate_per_minute=10**7, metrics_dir="off") as (base, proc):
            upload_id = tus_upload(base, keys[0], b"spike input\n" * 32)
            body = json.dumps({"upload_id": upload_id, "workflow": SPIKE_WORKFLOW["code"]}).encode()
            server0, machine0, load0, w0 = process_cpu(proc.pid), machine_cpu(), os.getloadavg()[0], time.perf_counter()
            load = _submit_all(base, keys, body, submits)
            server1, machine1, window = process_cpu(proc.pid), machine_cpu(), time.perf_counter() - w0
            results = load["results"]
            accepted = [job for status, _, job in results if status == 202 and job is not None]
            t1 = time.perf_counter()
            counts = wait_terminal(url, accepted, drain_timeout)
            drain_s = time.perf_counter() - t1
        latencies = [ms for _, ms, _ in results]
        refused = Counter(str(status) for status, _, _ in results if status != 202)
        per_submit = 1000 / max(1, len(accepted))
        return {"scenario": "spike", "backend": backend, "submits": submits, "clients": clients,
                "accepted": len(accepted), "refused": dict(refused), "internal": refused.get("500", 0),
                "submit_per_s": round(len(accepted) / load["elapsed_s"], 1), "p50_ms": _r(pct(latencies, 0.5)),
                "p99_ms": _r(pct(latencies, 0.99)), "drain_s": round(drain_s, 1),
                "lost": counts.get("missing", 0) + _open_counts(counts),
                "not_completed": sum(n for s, n in counts.items() if s != "completed"),
                "duplicated": _duplicated_steps(url),
                "server_cpu_ms_per_submit": round((server1 - server0) * per_submit, 2),
                "generator_cpu_ms_per_submit": round(load["cpu_s"] * per_submit, 2),
                "machine_busy_cores": round((machine1[0] - machine0[0]) / window, 2),
                "load_avg_1m": round(load0, 2)}


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

    with _connection(url) as conn:
        return {int(pid): str(wid) for wid, pid in conn.execute(sa.text(
            "SELECT id, pid FROM workers WHERE heartbeat_at > started_at")).all()}


def _rescue_delays(url: str, kills: dict[str, float]) -> list[float]:
    """Seconds from each killed worker's SIGKILL to the rescue of each job it held."""
    import sqlalchemy as sa

    from mediamill.store.tables import job_events

    with _connection(url) as conn:
        rows = conn.execute(sa.select(job_events.c.data, job_events.c.created_at)
                            .where(job_events.c.event_type == "rescue")).all()
    delays = []
    for data, at in rows:
        owner = (data or {}).get("worker")
        if owner in kills:
            delays.append(at.replace(tzinfo=UTC).timestamp() - kills[owner])
    return delays


class _Storm:
    """Keeps ``n`` worker processes running and SIGKILLs a random serving one every ``every`` seconds."""

    def __init__(self, data: Path, url: str, n: int, every: float) -> None:
        self.env = process_env(data, url, **CHAOS_SETTINGS)
        self.data, self.url, self.every = data, url, every
        self.procs = [self._start() for _ in range(n)]
        self.dead: list[Any] = []
        self.kills: dict[str, float] = {}
        self.ready_since: dict[int, float] = {}  # pid -> when its first heartbeat was seen (monotonic)
        self.next_kill = time.monotonic() + every

    def _start(self) -> Any:
        return start_process(self.data, self.env, "worker", "--pool", f"{CHAOS_WORKFLOW['queue']}=2")

    def tick(self) -> None:
        with contextlib.suppress(Exception):  # the database may be restarting: look again at the next tick
            ready = _worker_ids(self.url)
            now = time.monotonic()
            for pid in ready:
                self.ready_since.setdefault(pid, now)
            if now < self.next_kill:
                return
            # a victim has served one storm period since its first heartbeat. Ready alone is not enough: on a
            # busy machine start-up takes longer than the storm's period times the workers, every worker would
            # be killed within moments of its first heartbeat — before its first rescue pass or its first
            # step — and nothing would progress. On a quiet machine this changes nothing (a worker lives
            # about workers × period anyway); on a busy one the kills come as fast as restarts can serve.
            serving = [i for i, p in enumerate(self.procs)
                       if p.pid in ready and now - self.ready_since[p.pid] >= self.every]
            if serving:
                self.next_kill = now + self.every
                self._kill(random.choice(serving), ready)

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
          timeout: float = 600, nap_seconds: float = 0.3) -> dict[str, Any]:
    """``jobs`` 3-step jobs, ``workers`` workers, one SIGKILLed every ``kill_every`` s, PostgreSQL restarted
    ``pg_restarts`` times (evenly over the run) on a cluster of its own. ``nap_seconds``: the middle step's
    length (longer naps make a small run outlast several storm periods on a fast machine)."""
    from tests.pgcluster import own_postgres_cluster

    with tempfile.TemporaryDirectory(prefix="mm-chaos-") as tmp, own_postgres_cluster() as cluster:
        data, url = Path(tmp) / "data", cluster.url
        workflow = {**CHAOS_WORKFLOW, "steps": [
            {**st, "params": {"seconds": nap_seconds}} if st["action"] == "sleep" else st
            for st in CHAOS_WORKFLOW["steps"]]}
        prepare_database(data, url, [workflow], **CHAOS_SETTINGS)
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
                "failures": _failures(url), "rescues": len(delays), "rescue_p50_s": _r(pct(delays, 0.5)),
                "rescue_max_s": _r(max(delays) if delays else None), "elapsed_s": round(elapsed, 1)}


def _output_jobs(url: str, job_ids: list[int]) -> int:
    """Jobs of ``job_ids`` with exactly one output (the thumbnail): outputs = jobs."""
    import sqlalchemy as sa

    with _connection(url) as conn:
        rows = conn.execute(sa.text("SELECT job_id, count(*) FROM job_outputs GROUP BY job_id")).all()
    wanted = set(job_ids)
    return sum(1 for job, n in rows if job in wanted and n == 1)


# ------------------------------------------------------------------------------ corrupt mix
# family -> (workflow, sample attribute of the tests' media set, the damages a family suffers, the good end state)
CORRUPT_FAMILIES: dict[str, tuple[str, str, str]] = {
    "image": ("WF-IMAGE-PROCESS", "jpeg", "completed"),
    "pdf": ("WF-DOC-PROCESS", "pdf", "completed"),
    "docx": ("WF-DOC-PROCESS", "docx", "partial"),  # no page preview for DOCX: the built-in ends partial
    "audio": ("WF-AUDIO-TRANSCODE", "m4a_plain", "completed"),
    "video": ("WF-VIDEO-TRANSCODE", "video", "completed"),
}


def _damages(damage: Any) -> dict[str, tuple[Any, ...]]:
    """Damage each family cannot hide: a zeroed stretch of PCM or of an image's pixels is still a valid file
    (it plays as silence, shows as black), so the mix uses cuts, foreign bytes and broken structure."""
    broken = (damage.truncated(0.1), damage.truncated(0.5), damage.wrong_magic_after_header(16))
    return {"image": broken, "video": broken, "audio": broken, "pdf": damage.PDF_PAGES[:4],
            "docx": (damage.DOCX[-3], damage.truncated(0.5))}


def _corrupt_inputs(media_dir: Path, total: int, damaged_share: float) -> list[tuple[str, Path, bool]]:
    """(family, file, damaged?) round-robin over the families, ``damaged_share`` of them damaged."""
    from tests.media import damage
    from tests.media.conftest import Media

    media_dir.mkdir(parents=True, exist_ok=True)
    media = Media(media_dir)
    kinds = list(CORRUPT_FAMILIES)
    n_bad = max(1, round(total * damaged_share))
    bad_at = {round(i * total / n_bad) + (total // n_bad) // 2 for i in range(n_bad)}  # spread over the run
    out = []
    for i in range(total):
        family = kinds[i % len(kinds)]
        good = getattr(media, CORRUPT_FAMILIES[family][1])
        if i in bad_at:
            damages = _damages(damage)[family]
            how = damages[i % len(damages)]
            out.append((family, damage.damaged_copy(good, how, media_dir / "damaged" / str(i)), True))
        else:
            out.append((family, good, False))
    return out


def _multipart_submit(base: str, key: str, path: Path, workflow: str) -> httpx.Response:
    with path.open("rb") as fh:
        return httpx.post(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                          data={"workflow": workflow}, files={"file": (path.name, fh)})


def _job(base: str, key: str, job_id: int) -> dict[str, Any]:
    r = httpx.get(f"{base}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    r.raise_for_status()
    return dict(r.json())


def _check_corrupt(base: str, key: str, jobs: list[tuple[str, Path, bool, int, str]]) -> dict[str, Any]:
    import hashlib

    tally: Counter[str] = Counter()
    wrong: list[str] = []
    for family, path, damaged, job_id, _ in jobs:
        d = _job(base, key, job_id)
        if not damaged:
            tally["good_ok" if d["status"] == CORRUPT_FAMILIES[family][2] else "good_wrong"] += 1
            continue
        ok = d["status"] == "failed" and d.get("error_class") == "invalid_input" and not d.get("retry_count")
        tally["damaged_ok" if ok else "damaged_wrong"] += 1
        if not ok:
            wrong.append(f"{path.name}: {d['status']} {d.get('error_class')} retries={d.get('retry_count')}")
        kept = httpx.get(f"{base}/v1/jobs/{job_id}/input", headers={"Authorization": f"Bearer {key}"},
                         timeout=60, follow_redirects=True)
        same = kept.status_code == 200 and hashlib.sha256(kept.content).digest() == \
            hashlib.sha256(path.read_bytes()).digest()
        tally["inputs_kept" if same else "inputs_lost"] += 1
    return {**tally, "wrong": wrong}


def corrupt(*, total: int = 100, damaged_share: float = 0.15, admin_url: str | None = None,
            timeout: float = 900) -> dict[str, Any]:
    """``total`` uploads across five families, ``damaged_share`` of them damaged, through `serve`."""
    with tempfile.TemporaryDirectory(prefix="mm-corrupt-") as tmp, database(
            "postgres" if admin_url else "sqlite", Path(tmp), admin_url) as url:
        data = Path(tmp) / "data"
        [key] = prepare_database(data, url, [])
        inputs = _corrupt_inputs(Path(tmp) / "media", total, damaged_share)
        with serve(data, url, submit_rate_per_minute=10**6) as base:
            jobs = []
            for family, path, damaged in inputs:
                res = _multipart_submit(base, key, path, CORRUPT_FAMILIES[family][0])
                jobs.append((family, path, damaged, int(res.json()["id"]) if res.status_code == 202 else -1,
                             str(res.status_code)))
            accepted = [j[3] for j in jobs if j[3] > 0]
            counts = wait_terminal(url, accepted, timeout)
            tally = _check_corrupt(base, key, [j for j in jobs if j[3] > 0])
        refused = Counter(j[4] for j in jobs if j[3] < 0)
        return {"scenario": "corrupt", "backend": "postgres" if admin_url else "sqlite", "inputs": total,
                "damaged": sum(1 for j in jobs if j[2]), "accepted": len(accepted), "refused_at_submit": dict(refused),
                "lost": counts.get("missing", 0) + _open_counts(counts), **tally,
                "internal": refused.get("500", 0), "duplicated": _duplicated_steps(url)}


# ------------------------------------------------------------------------------ disk full
def disk_full(*, size_mb: int = 48, upload_kb: int = 512, after: int = 5) -> dict[str, Any]:
    """SQLite and storage on a small tmpfs: upload until the disk refuses, check nothing accepted is lost, give
    the disk room again and check new submits are taken and finish."""
    from tests.tmpfs import grow, mounted_tmpfs

    with tempfile.TemporaryDirectory(prefix="mm-disk-") as tmp, mounted_tmpfs(Path(tmp) / "disk", size_mb) as disk:
        data = disk / "data"
        url = f"sqlite:///{data / 'mediamill.db'}"
        [key] = prepare_database(data, url, [SPIKE_WORKFLOW])
        body = Path(tmp) / "upload.bin"
        body.write_bytes(os.urandom(upload_kb * 1024))
        statuses: Counter[str] = Counter()
        accepted: list[int] = []
        with serve(data, url, submit_rate_per_minute=10**6, storage_min_free_mb=0) as base:
            refusals = 0
            while refusals < 5 and len(accepted) < 10 * size_mb:
                res = _multipart_submit(base, key, body, SPIKE_WORKFLOW["code"])
                statuses[str(res.status_code)] += 1
                if res.status_code == 202:
                    accepted.append(int(res.json()["id"]))
                else:
                    refusals += 1
            full_counts = wait_terminal(url, accepted, 120)
            grow(disk, size_mb * 8)
            later = [_multipart_submit(base, key, body, SPIKE_WORKFLOW["code"]) for _ in range(after)]
            later_ids = [int(r.json()["id"]) for r in later if r.status_code == 202]
            later_counts = wait_terminal(url, later_ids, 120)
        return {"scenario": "disk", "backend": "sqlite", "tmpfs_mb": size_mb, "statuses": dict(statuses),
                "accepted": len(accepted), "internal": statuses.get("500", 0),
                "lost": full_counts.get("missing", 0) + _open_counts(full_counts),
                "recovered": later_counts.get("completed", 0), "recovery_submits": after}

# ------------------------------------------------------------------------------ hostile tenant
HOSTILE_WORKFLOW = {"code": "WF-TENANT-A", "name": "tenant a", "type": "generic", "queue": "tenant-a-queue",
                    "steps": [{"name": "only", "action": "noop"}]}


def _tenants(data: Path, url: str) -> dict[str, str]:
    """Keys: tenant A's admin and viewer, tenant B's admin and operator; A owns a workflow and its queue."""
    from mediamill.config import Settings
    from mediamill.runtime import Runtime
    from mediamill.store import auth_repo, workflow_repo
    from mediamill.workflows.loader import validate_document

    rt = Runtime(Settings(data_dir=data, database_url=url))
    try:
        rt.prepare()
        with rt.engine.begin() as conn:
            workflow_repo.save_version(conn, validate_document(HOSTILE_WORKFLOW), author="a", tenant_id="tenant-a")
        make = lambda role, tenant: auth_repo.create_key(rt.engine, role=role, tenant_id=tenant).plaintext  # noqa: E731
        return {"a_admin": make("admin", "tenant-a"), "a_viewer": make("viewer", "tenant-a"),
                "b_admin": make("admin", "tenant-b"), "b_operator": make("operator", "tenant-b")}
    finally:
        rt.close()


def _probes(a_job: int, a_code: str, a_queue: str, internal: str) -> list[tuple[str, str, str, str, Any]]:
    """(name, key, method, path, body): every one must be refused."""
    return [
        ("read another tenant's job", "b_admin", "GET", f"/v1/jobs/{a_job}", None),
        ("stream another tenant's job events", "b_admin", "GET", f"/v1/jobs/{a_job}/events?follow=false", None),
        ("list another tenant's outputs", "b_admin", "GET", f"/v1/jobs/{a_job}/outputs", None),
        ("download another tenant's input", "b_admin", "GET", f"/v1/jobs/{a_job}/input", None),
        ("cancel another tenant's job", "b_admin", "POST", f"/v1/jobs/{a_job}/cancel", None),
        ("retry another tenant's job", "b_admin", "POST", f"/v1/jobs/{a_job}/retry", None),
        ("reprioritise another tenant's job", "b_admin", "PATCH", f"/v1/jobs/{a_job}", {"priority": 99}),
        ("read another tenant's workflow", "b_admin", "GET", f"/v1/workflows/{a_code}", None),
        ("pause another tenant's queue", "b_operator", "POST", f"/v1/queues/{a_queue}/pause", None),
        ("pause a shared built-in queue", "b_operator", "POST", "/v1/queues/image_processing/pause", None),
        ("submit as a viewer", "a_viewer", "POST", "/v1/jobs", {"url": "https://example.com/a.jpg"}),
        ("create a key as a viewer", "a_viewer", "POST", "/v1/keys", {"role": "admin"}),
        ("pause a queue as a viewer", "a_viewer", "POST", f"/v1/queues/{a_queue}/pause", None),
        ("fetch a loopback URL (SSRF)", "b_admin", "POST", "/v1/jobs", {"url": f"{internal}/healthz"}),
        ("fetch a bracketed loopback URL", "b_admin", "POST", "/v1/jobs", {"url": "http://[127.0.0.1]/"}),
        ("fetch the IPv6 loopback", "b_admin", "POST", "/v1/jobs", {"url": "http://[::1]/x"}),
        ("fetch the metadata address", "b_admin", "POST", "/v1/jobs", {"url": "http://169.254.169.254/latest/"}),
        ("webhook to loopback", "b_admin", "POST", "/v1/channels", {"kind": "webhook", "config": {"url": internal}}),
        ("no key at all", "", "GET", "/v1/jobs", None),
    ]


def _refused(status: int) -> bool:
    return status in (401, 403, 404, 405, 409, 422, 429, 431) and status != 409


def hostile(*, admin_url: str | None = None) -> dict[str, Any]:
    """A tenant B (and a viewer of A) probing tenant A; also listings that must not leak A's names."""
    with tempfile.TemporaryDirectory(prefix="mm-hostile-") as tmp, database("sqlite" if admin_url is None else
                                                                            "postgres", Path(tmp), admin_url) as url:
        data = Path(tmp) / "data"
        keys = _tenants(data, url)
        with serve(data, url) as base:
            auth = lambda k: {"Authorization": f"Bearer {keys[k]}"} if k else {}  # noqa: E731
            up = tus_upload(base, keys["a_admin"], b"tenant a's input\n")
            res = httpx.post(f"{base}/v1/jobs", headers=auth("a_admin"),
                             json={"upload_id": up, "workflow": HOSTILE_WORKFLOW["code"]})
            res.raise_for_status()
            a_job = int(res.json()["id"])
            rows = []
            for name, key, method, path, body in _probes(a_job, HOSTILE_WORKFLOW["code"], HOSTILE_WORKFLOW["queue"],
                                                        base):
                r = httpx.request(method, base + path, headers=auth(key), json=body, timeout=30)
                rows.append({"probe": name, "status": r.status_code, "refused": _refused(r.status_code)})
            rows += _leaks(base, auth("b_admin"), a_job)
            post = httpx.post(f"{base}/v1/workflows", headers=auth("b_admin"), json={**HOSTILE_WORKFLOW,
                                                                                     "name": "b's copy"})
            rows.append({"probe": "create a workflow with another tenant's code (existence oracle)",
                         "status": post.status_code, "refused": post.status_code != 409})
        return {"scenario": "hostile", "backend": "postgres" if admin_url else "sqlite", "probes": len(rows),
                "refused": sum(r["refused"] for r in rows), "allowed": [r for r in rows if not r["refused"]],
                "table": rows}


def _leaks(base: str, headers: dict[str, str], a_job: int) -> list[dict[str, Any]]:
    """Listings tenant B may read: none may name tenant A's job, workflow or queue."""
    secrets = (HOSTILE_WORKFLOW["code"], HOSTILE_WORKFLOW["queue"], f'"id": {a_job},', f'"id":{a_job},')
    rows = []
    for path in ("/v1/jobs", "/v1/queues", "/v1/workers", "/v1/alerts", "/v1/dead-letters", "/v1/workflows",
                 "/v1/analytics/queues"):
        r = httpx.get(base + path, headers=headers, timeout=30)
        leaked = [s for s in secrets if s in r.text]
        rows.append({"probe": f"{path} names nothing of another tenant", "status": r.status_code,
                     "refused": not leaked, "leaked": leaked})
    return rows

# ------------------------------------------------------------------------------ main
SCENARIOS = ("spike", "chaos", "disk", "corrupt", "hostile")


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    small = args.small
    rows: list[dict[str, Any]] = []
    for name in args.scenarios.split(","):
        if name == "spike":
            for backend in args.backends.split(","):
                rows.append(spike(backend, submits=300 if small else args.submits, clients=8 if small else 32))
        elif name == "chaos":
            rows.append(chaos(jobs=30 if small else 200, pg_restarts=1 if small else 2))
        elif name == "disk":
            rows.append(disk_full())
        elif name == "corrupt":
            rows.append(corrupt(total=20 if small else 100))
        elif name == "hostile":
            rows.append(hostile())
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
