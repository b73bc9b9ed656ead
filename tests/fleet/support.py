"""Helpers for the fleet tests: real `mediamill` processes on a database the test owns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_until

#: The install key every process of a test fleet shares (as a real fleet must).
FLEET_SECRET_KEY = "fleet-test-install-key-0123456789abcdef"


def mediamill_process(cmd: list[str], *, data_dir: Path, database_url: str, log_name: str,
                      env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``mediamill <cmd>`` with its output in ``data_dir/<log_name>.log`` (a file: never a full pipe)."""
    full_env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data_dir), "MEDIAMILL_DATABASE_URL": database_url,
                "MEDIAMILL_STORAGE_URL": "", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1",
                "MEDIAMILL_POLL_INTERVAL": "0.2", "MEDIAMILL_SECRET_KEY": FLEET_SECRET_KEY, **(env or {})}
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / f"{log_name}.log").open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", *cmd], env=full_env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def log_of(data_dir: Path, log_name: str) -> str:
    return (data_dir / f"{log_name}.log").read_text(errors="replace")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM the process (it stops its own children), wait, SIGKILL the group when it lingers; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return int(proc.returncode)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    wait_until(lambda: proc.poll() is not None, timeout=timeout, interval=0.1, message="process exit")
    return int(proc.returncode)
