"""The database as the HTTP API meets it: a read-only engine beside the shared one, the readiness
probe, and the driver errors that mean "the database did not take this" rather than a bug.

The API's handlers and probes use these names so that no module outside ``store/`` has to know
the SQLAlchemy exception classes or how a SQLite reader is set up.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

#: A value the database cannot hold (a number beyond SQLite's INTEGER or PostgreSQL's bigint).
OUT_OF_RANGE_ERRORS: tuple[type[Exception], ...] = (sa_exc.DataError,)
#: The database does not answer (down, cut off, the pool exhausted): nothing was changed.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError,
                                                   sa_exc.TimeoutError)
#: Any error the database driver raised (the database went away, refused, or timed out): a background loop
#: that meets one logs a line and tries again after a back-off (``mediamill.loops``).
DATABASE_ERRORS: tuple[type[Exception], ...] = (sa_exc.DBAPIError,)
#: The database went away or cannot be reached (a cut link, a restart, a killed session) — not a refused
#: statement: what a job's run waits out before deciding what became of its claim.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError)


def make_read_engine(engine: Engine) -> Engine:
    """An engine for read-only work beside ``engine``.

    On SQLite every transaction of the shared engine begins IMMEDIATE (it takes the write lock so
    writers queue instead of failing), which would make each read wait behind each write. This one
    runs in autocommit mode with ``query_only`` on: WAL lets it read beside the writer. On
    PostgreSQL it is ``engine`` itself.
    """
    if engine.dialect.name != "sqlite":
        return engine
    reader = sa.create_engine(engine.url, connect_args={"check_same_thread": False, "isolation_level": None,
                                                        "timeout": 30}, pool_size=10, max_overflow=30)
    event.listen(reader, "connect", _read_only_pragmas)
    return reader


def _read_only_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in ("query_only=ON", "busy_timeout=30000", "temp_store=MEMORY", "cache_size=-65536",
                   "mmap_size=268435456"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def probe_schema(engine: Engine) -> None:
    """One read of a mediamill table: returns when the database answers and its schema is migrated,
    raises the driver's error otherwise."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1 FROM workflow_definitions LIMIT 1"))
