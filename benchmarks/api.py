"""HTTP API benchmark: submit throughput, upload throughput, SSE fan-out latency.

    python benchmarks/api.py [--json] [--duration 10] [--postgres-url URL] [--cases submit_sqlite,…]

Cases (targets from issue 5, on a 2-core machine, everything on loopback):

- ``submit_sqlite`` / ``submit_postgres``: ``POST /v1/jobs`` naming an ``upload_id``, driven by
  ``wrk`` (a standard load generator; an asyncio httpx generator when wrk is missing).
  Target ≥ 1,000 requests/s with p99 ≤ 50 ms.
- ``upload_multipart`` / ``upload_tus``: a 512 MiB file as one multipart job submission, and
  through tus in 64 MiB PATCHes. Target ≥ 200 MB/s.
- ``sse_1000``: 1,000 concurrent subscribers of ``GET /v1/events``; job events are written to
  the database (as the engine writes them) and the delay to each subscriber is measured.
  Target p99 ≤ 250 ms.

The API runs as ``uvicorn`` in a subprocess (``--api-workers`` processes), like ``mediamill api``.
``--json`` prints ``{"rows": [{"case", "rps", "p50_ms", "p99_ms", "mb_per_s"}, …]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from harness import free_port, pct, tus_upload

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = {"code": "WF-BENCH-NOOP", "name": "bench", "type": "generic", "queue": "bench",
            "steps": [{"name": "Nothing", "action": "noop"}]}
CASES = ("submit_sqlite", "submit_postgres", "upload_multipart", "upload_tus", "sse_1000")
MB = 1024 * 1024


# ------------------------------------------------------------------------------ server
def _prepare(data_dir: Path, database_url: str) -> str:
    """Migrate, install the bench workflow, return an admin key."""
    from mediamill.config import Settings
    from mediamill.runtime import Runtime
    from mediamill.store import auth_repo, workflow_repo
    from mediamill.workflows.loader import validate_document

    rt = Runtime(Settings(data_dir=data_dir, database_url=database_url))
    rt.migrate()
    with rt.engine.begin() as conn:
        workflow_repo.save_version(conn, validate_document(WORKFLOW), author="bench")
    key = auth_repo.create_key(rt.engine, role="admin", name="bench").plaintext
    rt.close()
    return key


@contextlib.contextmanager
def api_server(data_dir: Path, database_url: str, workers: int) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data_dir), "MEDIAMILL_DATABASE_URL": database_url,
           "MEDIAMILL_SUBMIT_RATE_PER_MINUTE": str(10**9), "MEDIAMILL_MAX_UPLOAD_BYTES": str(64 * 1024**3),
           "MEDIAMILL_LOG_LEVEL": "WARNING", "MEDIAMILL_METRICS_DIR": "off"}
    cmd = [sys.executable, "-m", "uvicorn", "mediamill.cli.api:app_factory", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log",
           "--loop", "uvloop", "--http", "httptools", "--backlog", "4096"]
    proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    import sqlalchemy as sa

    name = f"mm_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _row(case: str, rps: float | None = None, p50: float | None = None, p99: float | None = None,
         mbps: float | None = None) -> dict[str, Any]:
    r = lambda v: None if v is None else round(v, 2)  # noqa: E731
    return {"case": case, "rps": r(rps), "p50_ms": r(p50), "p99_ms": r(p99), "mb_per_s": r(mbps)}


# ------------------------------------------------------------------------------ submit
WRK_LUA = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def _wrk_ms(text: str, label: str) -> float | None:
    m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def submit_case(case: str, url: str, key: str, args: argparse.Namespace) -> dict[str, Any]:
    upload_id = tus_upload(url, key, b"benchmark input\n" * 64)
    body = json.dumps({"upload_id": upload_id, "workflow": WORKFLOW["code"]})
    httpx.post(f"{url}/v1/jobs", content=body, headers={"Authorization": f"Bearer {key}",
                                                         "Content-Type": "application/json"}).raise_for_status()
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(WRK_LUA % (body, key))
        out = subprocess.run(["wrk", "-t", "1", "-c", str(args.connections), "-d", f"{args.duration}s", "--latency",
                              "-s", fh.name, f"{url}/v1/jobs"], capture_output=True, text=True, check=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            print(f"{case}: {errors.group(1)} non-2xx responses", file=sys.stderr)
        return _row(case, rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%"))
    return asyncio.run(_httpx_load(case, url, key, body, args))


async def _httpx_load(case: str, url: str, key: str, body: str, args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.monotonic() + args.duration
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            await client.post("/v1/jobs", content=body, headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)

    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=args.connections)) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.connections)))
    return _row(case, len(latencies) / args.duration, pct(latencies, 0.5), pct(latencies, 0.99))


# ------------------------------------------------------------------------------ uploads
def _multipart_body(size: int, boundary: str) -> Iterator[bytes]:
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"workflow\"\r\n\r\n{WORKFLOW['code']}\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.bin\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    block = os.urandom(MB)
    for _ in range(size // MB):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def upload_multipart(url: str, key: str, size: int) -> dict[str, Any]:
    boundary = "benchboundary" + uuid.uuid4().hex
    t0 = time.perf_counter()
    res = httpx.post(f"{url}/v1/jobs", content=_multipart_body(size, boundary), timeout=600,
                     headers={"Authorization": f"Bearer {key}",
                              "Content-Type": f"multipart/form-data; boundary={boundary}"})
    res.raise_for_status()
    elapsed = time.perf_counter() - t0
    return _row("upload_multipart", mbps=size / MB / elapsed)


def upload_tus(url: str, key: str, size: int, chunk: int = 64 * MB) -> dict[str, Any]:
    h = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    block = os.urandom(chunk)
    t0 = time.perf_counter()
    res = httpx.post(f"{url}/v1/uploads", headers={**h, "Upload-Length": str(size)})
    res.raise_for_status()
    location = res.headers["location"]
    with httpx.Client(timeout=600) as client:
        for offset in range(0, size, chunk):
            part = memoryview(block)[: min(chunk, size - offset)]
            # streamed in 1 MiB pieces, as tus clients read a file (httpx is slow with one huge bytes body)
            body = (bytes(part[i: i + MB]) for i in range(0, len(part), MB))
            res = client.patch(location, content=body,
                               headers={**h, "Upload-Offset": str(offset),
                                        "Content-Type": "application/offset+octet-stream"})
            res.raise_for_status()
    elapsed = time.perf_counter() - t0
    return _row("upload_tus", mbps=size / MB / elapsed)


# ------------------------------------------------------------------------------ SSE
async def _subscriber(host: str, port: int, key: str, ready: asyncio.Event, counter: list[int],
                      delays: list[float], expected: int) -> None:
    """A minimal SSE client on a raw socket (an httpx stream per subscriber would make the load
    generator, not the server, the bottleneck at 1,000 subscribers)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    buf = await reader.readuntil(b"stream open")  # headers and the opening comment: subscribed
    counter[0] += 1
    if counter[0] >= counter[1]:
        ready.set()
    got, buf = 0, b""
    try:
        while got < expected:
            data = await reader.read(65536)
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            now = time.time()
            for line in lines:
                if line.startswith(b"data: "):
                    sent = json.loads(line[6:])["data"].get("t")
                    if sent is not None:
                        delays.append((now - sent) * 1000)
                        got += 1
    finally:
        writer.close()


def _emit_events(database_url: str, data_dir: Path, count: int, interval: float) -> None:
    from mediamill.config import Settings
    from mediamill.runtime import Runtime
    from mediamill.store.tables import job_events

    rt = Runtime(Settings(data_dir=data_dir, database_url=database_url))
    for i in range(count):
        with rt.engine.begin() as conn:
            conn.execute(job_events.insert().values(job_id=None, tenant_id="default", event_type="progress",
                                                    data={"t": time.time(), "i": i}))
            if rt.engine.dialect.name == "postgresql":
                conn.exec_driver_sql("NOTIFY mediamill_events")
        time.sleep(interval)
    rt.close()


async def sse_case(url: str, key: str, database_url: str, data_dir: Path, subscribers: int,
                   events: int = 20) -> dict[str, Any]:
    delays: list[float] = []
    ready = asyncio.Event()
    counter = [0, subscribers]
    host, port = url.removeprefix("http://").split(":")
    tasks = [asyncio.create_task(_subscriber(host, int(port), key, ready, counter, delays, events))
             for _ in range(subscribers)]
    await asyncio.wait_for(ready.wait(), 120)
    await asyncio.sleep(2.0)  # every stream authenticated and registered with the hub
    await asyncio.to_thread(_emit_events, database_url, data_dir, events, 0.25)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    for t in tasks:
        t.cancel()
    delivered = len(delays)
    print(f"sse: {delivered} of {events * subscribers} deliveries", file=sys.stderr)
    return _row(f"sse_{subscribers}", None, pct(delays, 0.5), pct(delays, 0.99))


# ------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    wanted = args.cases.split(",") if args.cases else list(CASES)
    with tempfile.TemporaryDirectory(prefix="mm-bench-") as tmp:
        sqlite_dir = Path(tmp) / "sqlite"
        key = _prepare(sqlite_dir, "")
        with api_server(sqlite_dir, "", args.api_workers or 1) as url:
            if "submit_sqlite" in wanted:
                rows.append(submit_case("submit_sqlite", url, key, args))
            if "upload_multipart" in wanted:
                rows.append(upload_multipart(url, key, args.upload_mb * MB))
            if "upload_tus" in wanted:
                rows.append(upload_tus(url, key, args.upload_mb * MB))
        if "sse_1000" in wanted:
            with api_server(sqlite_dir, "", 1) as url:
                rows.append(asyncio.run(sse_case(url, key, "", sqlite_dir, args.subscribers)))
        if "submit_postgres" in wanted:
            rows.append(_postgres_submit(Path(tmp) / "pg", args))
    return rows


def _postgres_submit(data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    if not args.postgres_url:
        return _row("submit_postgres")
    with postgres_database(args.postgres_url) as db_url:
        key = _prepare(data_dir, db_url)
        with api_server(data_dir, db_url, args.api_workers or 2) as url:
            return submit_case("submit_postgres", url, key, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--duration", type=int, default=10, help="seconds per submit run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent submit connections")
    parser.add_argument("--api-workers", type=int, default=0,
                        help="uvicorn processes (default: 1 on SQLite — one writer anyway — and 2 on PostgreSQL)")
    parser.add_argument("--upload-mb", type=int, default=512)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--cases", default="", help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--postgres-url", default=os.environ.get("MEDIAMILL_TEST_POSTGRES_URL", ""),
                        help="admin URL; a scratch database is created and dropped")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    rows = run(args)
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"{'case':<18}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'MB/s':>10}")
    for r in rows:
        cells = ["-" if r[k] is None else f"{r[k]:.1f}" for k in ("rps", "p50_ms", "p99_ms", "mb_per_s")]
        print(f"{r['case']:<18}" + "".join(f"{c:>10}" for c in cells))


if __name__ == "__main__":
    main()
