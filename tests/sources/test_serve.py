"""Acceptance with real processes: `mediamill serve` restarted while files land, and two `serve`
processes (one killed) watching the same folder — every file becomes exactly one job, and `move`
leaves the done and failed folders right."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from mediamill.runtime import Runtime
from mediamill.store.tables import source_files
from tests.helpers import BACKENDS, apply_workflow, database_url, free_port, make_runtime, wait_until

from .conftest import ANYTHING
from .support import add_source, jobs_by_path, write_slowly

SLOW, QUICK = 20, 5
SECRET_KEY = "sources-acceptance-install-key-0123456789abcdef"  # one installation: one key on every node
GOOD_QUICK = [f"quick-{i}.bin" for i in range(3)]
BAD_QUICK = ["bad-0.bin", "bad-1.bin"]


def _serve(data: Path, db_url: str, port: int, storage: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data), "MEDIAMILL_DATABASE_URL": db_url, "MEDIAMILL_PORT": str(port),
           "MEDIAMILL_STORAGE_URL": str(storage), "MEDIAMILL_POOLS": "intake=2", "MEDIAMILL_LEASE_SECONDS": "3",
           "MEDIAMILL_SOURCE_SETTLE_SECONDS": "1.0", "MEDIAMILL_SOURCE_POLL_SECONDS": "0.5",
           "MEDIAMILL_SOURCE_TICK_SECONDS": "0.2", "MEDIAMILL_POLL_INTERVAL": "0.2", "MEDIAMILL_METRICS_DIR": "off",
           "MEDIAMILL_SECRET_KEY": SECRET_KEY, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mediamill.cli.main", "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, timeout=90, interval=0.2, message="serve answering")
    return proc


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def _drop_files(inbox: Path, staging: Path) -> list[threading.Thread]:
    """20 files written slowly (each still growing for 1.5-3 s, starts staggered over 5 s) and 5 copied in at
    once, 2 s in; returns the writer threads."""
    threads = []
    for name in GOOD_QUICK + BAD_QUICK:
        (staging / name).write_bytes(os.urandom(20_000))

    def copy_all() -> None:
        time.sleep(2.0)
        for name in GOOD_QUICK + BAD_QUICK:
            shutil.copy(staging / name, inbox / name)

    copier = threading.Thread(target=copy_all, daemon=True)
    copier.start()
    threads.append(copier)
    for i in range(SLOW):
        threads.append(write_slowly(inbox / f"slow-{i:02}.bin", chunks=5 + i % 6, pause=0.3))
        time.sleep(0.25)
    return threads


def _finished(rt: Runtime, source_id: int) -> bool:
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(source_files.c.status).where(source_files.c.source_id == source_id)).scalars()
        statuses = list(rows)
    return len(statuses) == SLOW + QUICK and set(statuses) <= {"done", "failed"}


def _final_sizes() -> dict[str, int]:
    sizes = {f"slow-{i:02}.bin": (5 + i % 6) * 4096 for i in range(SLOW)}
    return sizes | dict.fromkeys(GOOD_QUICK + BAD_QUICK, 20_000)


def _check_outcome(rt: Runtime, inbox: Path) -> None:
    taken = jobs_by_path(rt)
    assert len(taken) == SLOW + QUICK, sorted(taken)
    assert all(len(ids) == 1 for ids in taken.values()), {k: v for k, v in taken.items() if len(v) > 1}
    with rt.engine.connect() as conn:
        got = dict(conn.execute(sa.text("SELECT input_filename, input_size FROM workflow_jobs")).all())
    assert got == _final_sizes()  # every job has its whole file, not a prefix of a growing one
    left = sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file())
    good = sorted([f"slow-{i:02}.bin" for i in range(SLOW)] + GOOD_QUICK)
    with rt.engine.connect() as conn:
        log = conn.execute(sa.text("SELECT path, status, after_done, error, claimed_by FROM source_files")).all()
    assert left == sorted([f"done/{n}" for n in good] + [f"failed/{n}" for n in BAD_QUICK]), (left, log)


@pytest.fixture
def sqlite_setup(tmp_path: Path) -> Iterator[tuple[Runtime, str]]:
    url = f"sqlite:///{tmp_path / 'data' / 'mediamill.db'}"
    rt = make_runtime(tmp_path / "data", url, secret_key=SECRET_KEY)
    yield rt, url
    rt.close()


def test_serve_restarted_while_files_land_takes_each_once(sqlite_setup: tuple[Runtime, str], tmp_path: Path) -> None:
    rt, url = sqlite_setup
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    staging.mkdir()
    port = free_port()
    proc = _serve(tmp_path / "data", url, port, tmp_path / "data" / "storage")
    try:
        apply_workflow(rt, ANYTHING)
        src = add_source(rt, name="inbox", kind="folder", path=str(inbox), after="move")
        writers: list[threading.Thread] = []
        dropper = threading.Thread(target=lambda: writers.extend(_drop_files(inbox, staging)))
        dropper.start()
        wait_until(lambda: len(jobs_by_path(rt)) >= 4, timeout=30, message="the first jobs")
        _stop(proc)  # a restart in the middle: files are still landing and growing
        assert len(jobs_by_path(rt)) < SLOW + QUICK
        proc = _serve(tmp_path / "data", url, port, tmp_path / "data" / "storage")
        dropper.join()
        for w in writers:
            w.join()
        wait_until(lambda: _finished(rt, src["id"]), timeout=120, interval=0.2, message="all 25 files finished")
    finally:
        _stop(proc)
    _check_outcome(rt, inbox)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_serve_processes_on_one_folder_take_each_once(tmp_path: Path, backend: str) -> None:
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    staging.mkdir()
    (tmp_path / "shared").mkdir()
    with database_url(backend, tmp_path / "shared") as url:
        rt = make_runtime(tmp_path / "shared", url, secret_key=SECRET_KEY)
        procs: list[subprocess.Popen[str]] = []
        try:
            procs = [_serve(tmp_path / f"node-{n}", url, free_port(), tmp_path / "shared-storage") for n in range(2)]
            apply_workflow(rt, ANYTHING)
            src = add_source(rt, name="shared-inbox", kind="folder", path=str(inbox), after="move")
            wait_until(lambda: _owner(rt, src["id"]), timeout=30, message="a process elected")
            writers: list[threading.Thread] = []
            dropper = threading.Thread(target=lambda: writers.extend(_drop_files(inbox, staging)))
            dropper.start()
            wait_until(lambda: len(jobs_by_path(rt)) >= 4, timeout=30, message="the first jobs")
            leader = _owner(rt, src["id"])
            victim = next(p for p in procs if f":{p.pid}:" in leader)
            _stop(victim, signal.SIGKILL)  # the elected process dies without handing anything back
            dropper.join()
            for w in writers:
                w.join()
                wait_until(lambda: _finished(rt, src["id"]), timeout=240, interval=0.2,
                       message=f"all 25 files finished ({_state(rt)})")
            owners = {f for (f,) in _claimers(rt, src["id"])}
            assert len(owners) == 2, owners  # the survivor took over from the dead leader
        finally:
            for p in procs:
                _stop(p)
        _check_outcome(rt, inbox)
        rt.close()


def _state(rt: Runtime) -> str:
    """What is left, for a failure message: files by status, jobs by status."""
    with rt.engine.connect() as conn:
        files = conn.execute(sa.text("SELECT status, count(*) FROM source_files GROUP BY status")).all()
        jobs = conn.execute(sa.text("SELECT status, count(*) FROM workflow_jobs GROUP BY status")).all()
        owner = conn.execute(sa.text("SELECT owner, last_error FROM sources")).all()
    return f"files {dict(files)}, jobs {dict(jobs)}, source {owner}"


def _owner(rt: Runtime, source_id: int) -> str:
    with rt.engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT owner FROM sources WHERE id = :i"), {"i": source_id}).scalar() or "")


def _claimers(rt: Runtime, source_id: int) -> list[tuple[str]]:
    with rt.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(source_files.c.claimed_by).distinct()
                                               .where(source_files.c.source_id == source_id))]
