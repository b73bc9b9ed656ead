"""Network timeouts of PostgreSQL connections reach the server session and the socket, and cut stuck sessions."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mediamill.config import load_settings
from mediamill.runtime import Runtime
from mediamill.store.db import PgNetwork, upgrade
from tests.helpers import PG_SKIP_REASON, PG_URL, postgres_database

pytestmark = pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database("mm_timeouts") as url:
        upgrade(url)
        yield url


def _runtime(url: str, tmp_path: Path, **overrides: object) -> Runtime:
    return Runtime(settings=load_settings(database_url=url, data_dir=tmp_path, **overrides))


def test_defaults_reach_the_server_session_and_the_socket(pg_url: str, tmp_path: Path) -> None:
    rt = _runtime(pg_url, tmp_path)
    try:
        with rt.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "1min"
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "5min"
            pg = conn.connection.driver_connection
            assert pg is not None
            params = pg.info.get_parameters()
            assert params["connect_timeout"] == "10" and params["keepalives"] == "1"
            sock = socket.socket(fileno=pg.pgconn.socket)
            try:  # what the kernel will do with a silent peer
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            finally:
                sock.detach()  # the descriptor belongs to libpq
    finally:
        rt.close()


def test_settings_and_url_parameters(pg_url: str, tmp_path: Path) -> None:
    rt = _runtime(pg_url + "?connect_timeout=7", tmp_path, db_statement_timeout_seconds=2.5,
                  db_idle_in_transaction_timeout_seconds=0)
    try:
        with rt.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "2500ms"
            assert conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "0"
            pg = conn.connection.driver_connection
            assert pg is not None and pg.info.get_parameters()["connect_timeout"] == "7"  # the URL wins
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
                conn.exec_driver_sql("SELECT pg_sleep(5)")
    finally:
        rt.close()
    assert PgNetwork().apply("sqlite:///x.db") == "sqlite:///x.db"


def test_a_session_idle_in_a_transaction_is_cut_and_its_locks_freed(pg_url: str, tmp_path: Path) -> None:
    rt = _runtime(pg_url, tmp_path, db_idle_in_transaction_timeout_seconds=1)
    other = _runtime(pg_url, tmp_path)
    try:
        with rt.engine.begin() as setup:
            setup.exec_driver_sql("INSERT INTO queues (name, paused) VALUES ('stuck', false)")
        stuck = rt.engine.connect()
        stuck.begin()
        stuck.exec_driver_sql("SELECT * FROM queues WHERE name = 'stuck' FOR UPDATE")
        # like a worker whose host was cut mid-transaction: the lock is held, nothing more is sent
        started = time.monotonic()
        with other.engine.begin() as conn:
            conn.exec_driver_sql("SET lock_timeout = '10s'")
            conn.exec_driver_sql("UPDATE queues SET paused = true WHERE name = 'stuck'")
        waited = time.monotonic() - started
        assert waited < 5, f"the row lock was held {waited:.1f} s"
        with pytest.raises(sa.exc.DBAPIError):
            stuck.exec_driver_sql("SELECT 1")  # the server ended that session
        stuck.invalidate()
        stuck.close()
    finally:
        rt.close()
        other.close()


def test_connect_timeout_bounds_a_server_that_never_answers(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever speaks PostgreSQL
    port = silent.getsockname()[1]
    rt = _runtime(f"postgresql://u:p@127.0.0.1:{port}/db", tmp_path, db_connect_timeout_seconds=2)
    outcome: list[float] = []

    def attempt() -> None:
        started = time.monotonic()
        try:
            with rt.engine.connect():
                pass
        except sa.exc.OperationalError:
            outcome.append(time.monotonic() - started)

    try:
        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(20)
        assert outcome and outcome[0] < 8, f"connect gave up after {outcome or 'more than 20 s'}"
    finally:
        rt.close()
        silent.close()
