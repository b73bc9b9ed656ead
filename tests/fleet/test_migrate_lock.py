"""Concurrent first start, `--no-migrate` and the version-skew check, with real `mediamill` processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from mediamill.store.db import code_head, create_db_engine, upgrade
from tests.fleet.support import log_of, mediamill_process, stop, wait_exit
from tests.helpers import BACKENDS, database_url, wait_until

UNKNOWN = "9999_from_the_future"


def _live_workers(url: str) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("workers"):
                return 0
            return int(conn.execute(sa.text("SELECT count(*) FROM workers WHERE status <> 'stopped'")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_workers_started_at_once_on_a_fresh_database_all_come_up(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        procs = [mediamill_process(["worker", "--pool", "*=1", "--name", f"w{i}"], data_dir=tmp_path / f"h{i}",
                                   database_url=url, log_name="worker") for i in range(3)]
        try:
            wait_until(lambda: _live_workers(url) == 3 or any(p.poll() is not None for p in procs), timeout=90,
                       interval=0.2, message="three workers registered")
            time.sleep(1.0)  # a crash right after registering would show now
            for i, p in enumerate(procs):
                assert p.poll() is None, f"worker {i} exited {p.returncode}:\n{log_of(tmp_path / f'h{i}', 'worker')}"
            assert _live_workers(url) == 3
            engine = create_db_engine(url)
            with engine.connect() as conn:
                rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
                codes = conn.execute(sa.text("SELECT workflow_code FROM workflow_definitions")).scalars().all()
            engine.dispose()
            assert rows == [code_head()]
            if backend == "sqlite":  # the lock lives next to the database file
                assert Path(url.split("///", 1)[1] + ".migrate.lock").is_file()
            assert len(codes) == len(set(codes)) == 5  # built-ins installed once, not thrice
        finally:
            for p in procs:
                stop(p)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("command", [["worker", "--pool", "*=1"], ["api", "--port", "1"], ["notifier"]])
def test_code_older_than_the_schema_refuses_to_start(backend: str, command: list[str], tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        engine = create_db_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": UNKNOWN})
        engine.dispose()
        for flags in ([], ["--no-migrate"]) if command[0] != "notifier" else ([],):
            proc = mediamill_process([*command, *flags], data_dir=tmp_path, database_url=url, log_name="skew")
            assert wait_exit(proc) == 2
            out = log_of(tmp_path, "skew")
            assert UNKNOWN in out and code_head() in out and "Traceback" not in out, out
        engine = create_db_engine(url)
        with engine.connect() as conn:  # nothing was changed trying
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [UNKNOWN]
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_migrate_leaves_the_schema_to_a_migrate_job(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        if backend == "sqlite":
            Path(url.split("///", 1)[1]).touch()  # an existing but empty database file
        proc = mediamill_process(["worker", "--no-migrate"], data_dir=tmp_path, database_url=url, log_name="early")
        assert wait_exit(proc) == 2
        assert "mediamill db upgrade" in log_of(tmp_path, "early")
        engine = create_db_engine(url)
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("alembic_version")  # --no-migrate created nothing
        engine.dispose()
        job = mediamill_process(["db", "upgrade"], data_dir=tmp_path, database_url=url, log_name="migrate")
        assert wait_exit(job) == 0, log_of(tmp_path, "migrate")
        proc = mediamill_process(["worker", "--no-migrate"], data_dir=tmp_path, database_url=url, log_name="late")
        try:
            wait_until(lambda: _live_workers(url) == 1 or proc.poll() is not None, timeout=60, interval=0.2,
                       message="worker registered")
            assert proc.poll() is None, log_of(tmp_path, "late")
        finally:
            assert stop(proc) == 0
