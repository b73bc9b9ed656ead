"""A 2 GiB multipart upload keeps the API process under 200 MB RSS (server in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from mediamill.store import auth_repo

from .support import free_port, make_runtime, wait_until

SIZE = 2 * 1024**3
CHUNK = 1024 * 1024
BOUNDARY = "mmboundary7d2f9c"


def _body() -> Iterator[bytes]:
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"workflow\"\r\n\r\nWF-TEST-NOOP\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
           f"Content-Type: application/octet-stream\r\n\r\n").encode()
    block = bytes(range(256)) * (CHUNK // 256)
    for _ in range(SIZE // CHUNK):
        yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_two_gib_multipart_upload_stays_under_200_mb(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rt = make_runtime(data)
    key = auth_repo.create_key(rt.engine, role="submitter").plaintext
    rt.close()
    port = free_port()
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data), "MEDIAMILL_MAX_UPLOAD_BYTES": str(4 * 1024**3)}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "mediamill.cli.api:app_factory", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb(proc.pid))
            time.sleep(0.05)

    try:
        wait_until(lambda: _ready(port), timeout=30)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        res = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", content=_body(), timeout=600,
                         headers={"Authorization": f"Bearer {key}",
                                  "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        assert res.status_code == 202, res.text
        job = httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{res.json()['id']}",
                        headers={"Authorization": f"Bearer {key}"}).json()
        assert job["input_size"] == SIZE
        print(f"\n2 GiB multipart: {SIZE / 1024**2 / elapsed:.0f} MB/s, peak RSS {peak[0]:.0f} MB")
        assert peak[0] < 200, f"peak RSS {peak[0]:.0f} MB"
    finally:
        done.set()
        proc.terminate()
        proc.wait(timeout=20)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
