"""Engine test fixtures: a runtime on SQLite or PostgreSQL with fast retry/lease settings, workers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mediamill.engine.submit import SubmitRequest, SubmittedJob, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from tests.helpers import BACKENDS, apply_workflow, database_url, make_runtime

FAST = {"retry_base_seconds": 0.05, "retry_max_seconds": 2.0, "lease_seconds": 2, "poll_interval": 0.2,
        "aging_seconds": 60, "breaker_cooldown_seconds": 1, "breaker_min_calls": 3, "shutdown_grace_seconds": 2}


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def rt(backend_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path / "data", backend_url, **FAST)
    yield runtime
    runtime.close()


@pytest.fixture
def pg_rt(tmp_path: Path) -> Iterator[Runtime]:
    with database_url("postgres", tmp_path) as url:
        runtime = make_runtime(tmp_path / "data", url, **FAST)
        yield runtime
        runtime.close()


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "input.txt"
    path.write_text("hello mediamill\n")
    return path


@pytest.fixture
def submit(rt: Runtime, input_file: Path) -> Callable[..., SubmittedJob]:
    def go(code: str, **kw: Any) -> SubmittedJob:
        inp = store_input_file(rt.storage, input_file)
        return submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code=code, **kw))

    return go


@pytest.fixture
def workers(rt: Runtime) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(pools: dict[str, int] | None = None, runtime: Runtime | None = None) -> Worker:
        w = Worker(runtime or rt, pools=pools or {"*": 2}).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop(grace=1)


def workflow(rt: Runtime, code: str, steps: list[dict[str, Any]], **extra: Any) -> None:
    apply_workflow(rt, {"code": code, "name": code, "type": "generic", "queue": extra.pop("queue", "q"),
                        "steps": steps, **extra})


def worker_process(rt: Runtime, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A real `mediamill worker` process on the test's database and data dir."""
    s = rt.settings
    full_env = {**os.environ, "MEDIAMILL_DATA_DIR": str(s.data_dir), "MEDIAMILL_DATABASE_URL": s.database_url,
                "MEDIAMILL_LEASE_SECONDS": str(s.lease_seconds), "MEDIAMILL_POLL_INTERVAL": str(s.poll_interval),
                "MEDIAMILL_RETRY_BASE_SECONDS": str(s.retry_base_seconds), **(env or {})}
    log = Path(s.data_dir) / f"worker-{uuid.uuid4().hex[:6]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # a file, never a pipe nobody reads: a chatty worker must not block on it
        return subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", "worker", *args], env=full_env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
