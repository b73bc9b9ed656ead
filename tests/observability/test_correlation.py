"""One job's log lines from the API, the worker (and its step child) and the notifier share job_id and request_id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from mediamill.store import auth_repo
from tests.helpers import free_port, make_runtime, wait_until
from tests.notify.support import Receiver


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _lines(log: Path) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_one_job_is_traceable_across_processes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rt = make_runtime(data)
    rt.prepare()
    key = auth_repo.create_key(rt.engine, role="admin").plaintext
    rt.close()
    port = free_port()
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data), "MEDIAMILL_DATABASE_URL": "", "MEDIAMILL_LOG_FORMAT": "json",
           "MEDIAMILL_URL_ALLOWLIST": "127.0.0.1", "MEDIAMILL_PORT": str(port), "MEDIAMILL_NOTIFY_POLL_SECONDS": "0.1",
           "MEDIAMILL_ALERT_DEFAULT_RULES": "false", "MEDIAMILL_METRICS_DIR": str(tmp_path / "metrics")}
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "worker", "notifier")}
    receiver = Receiver()
    procs = [_spawn(["api", "--no-migrate"], env, logs["api"]),
             _spawn(["worker", "--pool", "*=1"], env, logs["worker"]),
             _spawn(["notifier", "--no-alerts"], env, logs["notifier"])]
    try:
        wait_until(lambda: _up(port), timeout=60, interval=0.2, message="API up")
        workflow = {"code": "WF-TRACE", "name": "trace", "type": "generic", "queue": "trace",
                    "steps": [{"name": "Nap", "action": "sleep", "params": {"seconds": 0.1}}]}
        headers = {"Authorization": f"Bearer {key}"}
        httpx.post(f"http://127.0.0.1:{port}/v1/workflows", json=workflow, headers=headers).raise_for_status()
        src = tmp_path / "in.txt"
        src.write_text("trace me")
        with src.open("rb") as fh:
            resp = httpx.post(f"http://127.0.0.1:{port}/v1/jobs", headers={**headers, "X-Request-ID": "req-trace-42"},
                              files={"file": ("in.txt", fh)},
                              data={"workflow": "WF-TRACE", "notify": json.dumps({"webhook": receiver.url})})
        resp.raise_for_status()
        job_id = resp.json()["id"]
        wait_until(lambda: any(line.get("job_id") == job_id and "delivered" in line.get("event", "")
                               for line in _lines(logs["notifier"])), timeout=60, interval=0.2,
                   message="the notifier delivered the job's webhook")
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
        receiver.close()
    for name, log in logs.items():
        mine = [line for line in _lines(log) if line.get("job_id") == job_id]
        assert mine, f"no {name} log line carries job_id {job_id}"
        assert all(line.get("request_id") == "req-trace-42" for line in mine), (name, mine)
    worker_lines = [line for line in _lines(logs["worker"]) if line.get("job_id") == job_id]
    assert {line.get("process") for line in worker_lines} >= {"worker", "child"}  # the step child too
    assert all(line.get("worker") for line in worker_lines)
    assert any(line.get("step") == "Nap" for line in worker_lines)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
