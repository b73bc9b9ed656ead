"""The breakers' state cache never holds its lock while it waits for the database. On SQLite (one writer) a
runner refreshing the cache on a connection of its own waits for the claim's transaction, and the claim, inside
that transaction, reads the states too: holding the lock across the read deadlocked the two until SQLite's busy
timeout (a minute), with the heartbeat stuck behind them."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from mediamill.engine import breakers as breakers_mod
from mediamill.engine.breakers import BreakerConfig, Breakers
from tests.helpers import make_runtime, wait_until


def test_a_claim_reading_the_states_in_its_transaction_is_not_blocked_by_a_waiting_refresh(
        tmp_path: Path, monkeypatch) -> None:
    rt = make_runtime(tmp_path / "data", f"sqlite:///{tmp_path / 'mm.db'}")
    try:
        breakers = Breakers(rt.engine, BreakerConfig(), cache_seconds=0)
        entered = threading.Event()
        original = breakers_mod.breakers_repo.not_closed

        def reading(conn):  # type: ignore[no-untyped-def]
            if threading.current_thread().name == "runner":
                entered.set()  # the runner's own connection is about to wait for the claim's transaction
            return original(conn)

        monkeypatch.setattr(breakers_mod.breakers_repo, "not_closed", reading)
        claim_done = threading.Event()
        with rt.engine.begin() as conn:  # the claim's transaction: SQLite's write lock is taken
            conn.execute(sa.text("SELECT 1"))
            runner = threading.Thread(target=lambda: breakers.gate("resize_image", 1), name="runner", daemon=True)
            runner.start()
            wait_until(entered.is_set, timeout=10, message="the runner refreshing the states")

            def claim() -> None:
                breakers.warm(conn)  # inside the transaction, as the claimer does
                claim_done.set()

            claimer = threading.Thread(target=claim, daemon=True)
            claimer.start()
            claimer.join(timeout=10)
            assert claim_done.is_set(), "the claim waited for the breakers' lock held by a runner waiting for it"
        runner.join(timeout=30)
        assert not runner.is_alive()
    finally:
        rt.close()
