"""On SQLite, a read does not queue for the write lock: checking an API key while another process writes
answers at once (every other transaction of the shared engine begins IMMEDIATE and waits its turn)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from mediamill.store import auth_repo
from mediamill.store.db import reading
from tests.helpers import make_runtime


def _holding_write_lock(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    return holder


def _finishes_within(seconds: float, fn: object) -> tuple[bool, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)  # type: ignore[operator]
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), out


def test_a_key_check_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    db = tmp_path / "mm.db"
    rt = make_runtime(tmp_path / "data", f"sqlite:///{db}")
    try:
        key = auth_repo.create_key(rt.engine, role="submitter", name="reader").plaintext
        cache = auth_repo.KeyCache(ttl=0.0)  # every lookup verifies against the database
        assert cache.lookup(rt.engine, key) is not None  # first use: last_used_at written (no writer yet)
        holder = _holding_write_lock(db)
        try:
            done, out = _finishes_within(5.0, lambda: cache.lookup(rt.engine, key))
            assert done, "the key check waited for the writer's lock"
            assert out[0] is not None
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        rt.close()


def test_a_writing_transaction_still_takes_the_write_lock_at_begin(tmp_path: Path) -> None:
    db = tmp_path / "mm.db"
    rt = make_runtime(tmp_path / "data", f"sqlite:///{db}")
    try:
        holder = _holding_write_lock(db)
        started = time.monotonic()

        def write() -> float:
            with rt.engine.begin() as conn:  # waits at BEGIN for the holder, then writes without "locked" errors
                conn.execute(sa.text("SELECT 1"))
            return time.monotonic() - started

        thread_done, _ = _finishes_within(0.5, write)
        assert not thread_done  # queued behind the holder
        holder.execute("ROLLBACK")
        holder.close()
        with reading(rt.engine) as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        rt.close()
