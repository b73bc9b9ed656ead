"""Database engines: SQLite (WAL, sane pragmas) or PostgreSQL (psycopg 3), and migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mediamill.fsmode import create_private_file

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; NORMAL sync is durable across app crashes
    # in WAL mode; busy_timeout turns lock contention into a short wait instead of an error.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA mmap_size=268435456")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # The stdlib driver's implicit transactions are off (isolation_level=None below);
    # every transaction starts IMMEDIATE so writers queue on busy_timeout instead of
    # failing with "database is locked" when a read transaction tries to upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """Create an engine for a sqlite:// or postgresql+psycopg:// URL."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            create_private_file(Path(path))  # 0600 before SQLite creates it with the umask's mode
        engine = sa.create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "isolation_level": None,
                                          "timeout": 30},
            pool_size=pool_size, max_overflow=20,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(url, echo=echo, pool_size=pool_size, max_overflow=20, pool_pre_ping=True,
                            pool_recycle=1800)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations (``mediamill db upgrade``; ``serve`` runs it on start)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def schema_state(url: str) -> str:
    """Whether the database at ``url`` exists, without creating anything (no file, no folder).

    ``"missing"``: there is no database; ``"empty"``: it exists without mediamill's schema;
    ``"ready"``: migrations have run. A server that cannot be reached raises the driver's error.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_state(parsed.database or "")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return "ready" if sa.inspect(conn).has_table("alembic_version") else "empty"
    except sa.exc.OperationalError as exc:
        if "does not exist" in str(exc.orig):
            return "missing"
        raise
    finally:
        engine.dispose()


def _sqlite_state(path: str) -> str:
    if path in ("", ":memory:"):
        return "ready"  # an in-memory database is whatever the process made of it
    if not Path(path).is_file():
        return "missing"
    # read-only URI: opening never creates or converts the file
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").fetchone()
    except sqlite3.DatabaseError:
        return "empty"  # not a SQLite file at all: there is no mediamill database here
    finally:
        conn.close()
    return "ready" if row else "empty"
