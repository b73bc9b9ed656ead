"""What the benchmark scripts share: spare ports, percentiles, a prepared database, real `mediamill` processes.

Every process is started with ``sys.executable -m mediamill.cli.main`` (the code of this checkout) and logs to a
file in its data dir, never to a pipe nobody reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` puts benchmarks/ first; tests/pgcluster.py is shared
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))]


def prepare_database(data_dir: Path, database_url: str, workflows: list[dict[str, Any]],
                     keys: int = 1, **settings: Any) -> list[str]:
    """Migrate, install ``workflows`` and return ``keys`` admin API keys of the default tenant."""
    from mediamill.config import Settings
    from mediamill.runtime import Runtime
    from mediamill.store import auth_repo, workflow_repo
    from mediamill.workflows.loader import validate_document

    rt = Runtime(Settings(data_dir=data_dir, database_url=database_url, **settings))
    try:
        rt.prepare()
        with rt.engine.begin() as conn:
            for doc in workflows:
                workflow_repo.save_version(conn, validate_document(doc), author="bench")
        return [auth_repo.create_key(rt.engine, role="admin", name=f"bench-{i}").plaintext for i in range(keys)]
    finally:
        rt.close()


def process_env(data_dir: Path, database_url: str, **settings: Any) -> dict[str, str]:
    """The environment of a `mediamill` process on this data dir and database (``settings`` as MEDIAMILL_*)."""
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data_dir), "MEDIAMILL_DATABASE_URL": database_url,
           "MEDIAMILL_LOG_LEVEL": "WARNING", "PYTHONPATH": os.pathsep.join(filter(None, [
               str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))}
    env.update({f"MEDIAMILL_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_process(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """``mediamill ARGS`` in its own session, logging to ``data_dir/<command>-<id>.log``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"{args[0]}-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", *args], env=env, cwd=str(data_dir),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL the whole process group when it does not stop in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def wait_http(url: str, timeout: float = 60, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200 (fails early when ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


@contextlib.contextmanager
def serve(data_dir: Path, database_url: str, **settings: Any) -> Iterator[str]:
    """`mediamill serve` (API, workers, notifier in one process) on a spare port; yields its base URL."""
    with serve_process(data_dir, database_url, **settings) as (url, _proc):
        yield url


@contextlib.contextmanager
def serve_process(data_dir: Path, database_url: str,
                  **settings: Any) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`serve`, yielding the process too (to read its CPU time)."""
    port = free_port()
    proc = start_process(data_dir, process_env(data_dir, database_url, **settings),
                         "serve", "--host", "127.0.0.1", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", proc=proc)
        yield url, proc
    finally:
        stop_process(proc)


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (busy excludes idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already part of user
    return (total - values[3] - values[4]) / _TICK, total / _TICK


def tus_upload(url: str, key: str, data: bytes) -> str:
    """Upload ``data`` in one tus creation-with-upload request; returns the upload id."""
    h = {"Authorization": f"Bearer {key}", "Tus-Resumable": "1.0.0"}
    res = httpx.post(f"{url}/v1/uploads", headers={**h, "Upload-Length": str(len(data)),
                                                    "Content-Type": "application/offset+octet-stream"}, content=data)
    res.raise_for_status()
    return str(res.headers["location"].rsplit("/", 1)[1])
