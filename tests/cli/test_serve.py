"""`mediamill serve` on a fresh data dir, and the README's serve command in a fresh virtualenv from a clone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent.parent
CODES = ["WF-AUDIO-TRANSCODE", "WF-DOC-PROCESS", "WF-IMAGE-PROCESS", "WF-VIDEO-ANALYZE", "WF-VIDEO-TRANSCODE"]


def _start(cmd: list[str], data: Path, port: int, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data), "MEDIAMILL_PORT": str(port), "MEDIAMILL_DATABASE_URL": "",
           "MEDIAMILL_STORAGE_URL": "", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(proc: subprocess.Popen[str]) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def _workflows(port: int, key: str) -> dict[str, int]:
    resp = httpx.get(f"http://127.0.0.1:{port}/v1/workflows", headers={"Authorization": f"Bearer {key}"},
                     timeout=30)  # the first request of a fresh process on a busy machine
    resp.raise_for_status()
    return {w["code"]: w["versions"] for w in resp.json()["items"]}


def test_serve_on_fresh_data_dir(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    proc = _start([sys.executable, "-m", "mediamill.cli.main", "serve"], data, port)
    try:
        wait_until(lambda: _healthy(port) or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "serve exited"
    finally:
        out = _stop(proc)
    key = re.search(r"admin API key \(shown once\): (\S+)", out)
    assert key, out
    assert f"http://127.0.0.1:{port}" in out
    proc = _start([sys.executable, "-m", "mediamill.cli.main", "serve"], data, port)
    try:  # the second start: same workflows, no new versions, no new key printed
        wait_until(lambda: _healthy(port), timeout=60)
        assert _workflows(port, key.group(1)) == dict.fromkeys(CODES, 1)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30).status_code == 200
    finally:
        out2 = _stop(proc)
    assert "admin API key" not in out2


def test_readme_serve_command_from_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    command = next(line for line in (clone / "README.md").read_text().splitlines()
                   if line.startswith("python3 -m venv") and line.endswith("mediamill serve"))
    port = free_port()
    proc = _start(["bash", "-c", command], tmp_path / "data", port, cwd=clone)
    try:
        wait_until(lambda: _healthy(port) or proc.poll() is not None, timeout=600, interval=0.5)
        assert proc.poll() is None, "the README's serve command exited"
    finally:
        out = _stop(proc)
    assert "mediamill serving on" in out
