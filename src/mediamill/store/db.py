"""Database engines: SQLite (WAL, sane pragmas) or PostgreSQL (psycopg 3), and migrations.

``Engine`` and ``Connection`` are exported from here: code outside ``store/`` names the handles it
passes around through this module and never imports SQLAlchemy itself (a test over the import
graph keeps it so).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Connection as Connection
from sqlalchemy.engine import Engine as Engine

from mediamill import __version__
from mediamill.errors import ConfigError, SchemaBehind, SchemaTooNew
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


#: Execution option of a connection that only reads (see :func:`reading`).
READ_ONLY_OPTION = "mediamill_read_only"


def _sqlite_begin(conn: Any) -> None:
    # The stdlib driver's implicit transactions are off (isolation_level=None below);
    # every transaction starts IMMEDIATE so writers queue on busy_timeout instead of
    # failing with "database is locked" when a read transaction tries to upgrade.
    # A connection that only reads starts a plain (deferred) transaction: a WAL reader
    # that needs no lock and runs beside the writer.
    read_only = conn.get_execution_options().get(READ_ONLY_OPTION)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[sa.Connection]:
    """A connection of ``engine`` for reads only.

    On SQLite its transactions begin deferred instead of IMMEDIATE, so a read (a key check, a
    lookup) does not queue for the write lock behind group commits and the workers' writes;
    writing through it is a mistake (a deferred transaction that turns into a writer can fail with
    "database is locked" when another writer committed since it began).
    On PostgreSQL it is an ordinary connection.
    """
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY_OPTION: True})
        yield conn


class _Lane:
    """One engine's PostgreSQL connections for one-statement writes (:func:`autocommit`), kept in autocommit between
    uses and outside the engine's pool: a single submit then skips the pool's checkout, its reset and return and the
    two switches of autocommit (≈ 0.05 ms of its ≈ 0.55 ms).

    The lane holds at most ``size`` connections (the pool's own size), idle or in use; when all are in use, a write
    takes the pool's way (:func:`autocommit`), so the lane adds at most ``size`` sessions to what the pool
    may open. One unused for ``PING_AFTER_IDLE_SECONDS`` is pinged before use, as the pool pings its own; the
    oldest idle one goes when it sat unused that long and another is at hand (the lane shrinks after a burst); the
    engine's ``dispose()`` closes them all; a forked process starts without them and never closes its parent's.

    Each connection is kept as one cursor of it, used for every statement it runs: psycopg's cursor carries the
    adapters it looked up for the last statement's parameters, so the next submit skips a new cursor's set-up and
    those look-ups (≈ 25 µs of client CPU a submit, measured with a cold cache between round trips)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.idle: list[tuple[Any, float]] = []  # (psycopg cursor, when it was last given back: monotonic)
        self.open = 0  # connections of the lane, idle or in use
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def take(self, engine: Engine) -> Any | None:
        """A cursor of one of the lane's connections, or None when all are in use (the caller takes the pool's
        way)."""
        now, surplus = time.monotonic(), None
        with self.lock:
            if self.pid != os.getpid():  # (the parent's sessions: never used here, never closed here)
                self.idle, self.open, self.pid = [], 0, os.getpid()
            if len(self.idle) > 1 and now - self.idle[0][1] > PING_AFTER_IDLE_SECONDS:
                surplus = self.idle.pop(0)[0]
                self.open -= 1
            if self.idle:
                cursor, used = self.idle.pop()
            elif self.open < self.size:
                self.open += 1
                cursor, used = None, now
            else:
                return None
        if surplus is not None:
            _close_quietly(surplus.connection)
        try:
            if cursor is None:
                return self._new(engine)
            if now - used > PING_AFTER_IDLE_SECONDS and not _answers(cursor):
                _close_quietly(cursor.connection)
                return self._new(engine)
            return cursor
        except BaseException:
            self.forget()
            raise

    @staticmethod
    def _new(engine: Engine) -> Any:
        fairy, raw = _checkout_autocommit(engine)
        fairy.detach()  # the pool forgets it: it is this lane's until closed
        return raw.cursor()

    def give_back(self, cursor: Any) -> None:
        raw = cursor.connection  # (the libpq status read directly: ``raw.info`` builds an object each time)
        if not raw.closed and not raw.broken and raw.pgconn.transaction_status == TransactionStatus.IDLE:
            with self.lock:
                if self.pid == os.getpid():
                    self.idle.append((cursor, time.monotonic()))
                    return
        self.forget(cursor)

    def forget(self, cursor: Any = None) -> None:
        """One of the lane's connections is gone (closed here if its cursor is given)."""
        if cursor is not None:
            _close_quietly(cursor.connection)
        with self.lock:
            self.open = max(0, self.open - 1)

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
            self.open -= len(idle)
            ours = self.pid == os.getpid()
        if ours:  # (in a forked process the sessions are the parent's)
            for cursor, _used in idle:
                _close_quietly(cursor.connection)


def _answers(cursor: Any) -> bool:
    try:
        cursor.execute("SELECT 1")
    except Exception:
        return False
    return True


def _close_quietly(raw: Any) -> None:
    with contextlib.suppress(Exception):
        raw.close()


_lanes: weakref.WeakKeyDictionary[Engine, _Lane] = weakref.WeakKeyDictionary()
_lanes_lock = threading.Lock()


def _lane(engine: Engine) -> _Lane:
    lane = _lanes.get(engine)
    if lane is None:
        with _lanes_lock:
            lane = _lanes.get(engine)
            if lane is None:
                size = engine.pool.size() if isinstance(engine.pool, sa.pool.QueuePool) else 1
                lane = _lanes[engine] = _Lane(size)
                event.listen(engine, "engine_disposed", lambda _engine: lane.close())
    return lane


@contextlib.contextmanager
def autocommit(engine: Engine) -> Iterator[Any]:
    """A cursor of a PostgreSQL connection of ``engine``, the driver's own (psycopg), on which every statement is
    its own transaction: no ``BEGIN`` and ``COMMIT`` round trips, and none of SQLAlchemy's per-statement work. For one
    statement that does all its writes itself (``store`` modules only). It comes from the engine's lane of such
    connections (:class:`_Lane`), or from the pool when all of the lane's are in use (and then goes back out of
    autocommit: the pool's next transaction would otherwise commit statement by statement). A statement's error
    comes out as SQLAlchemy's; a lost server costs the lane and the pool their connections; a session left in an
    unknown state (interrupted mid-statement) is not kept."""
    lane = _lane(engine)
    cursor, fairy = lane.take(engine), None
    if cursor is None:
        fairy, raw = _checkout_autocommit(engine)
        cursor = raw.cursor()
    healthy = gone = False
    try:
        yield cursor
        healthy = True
    except engine.dialect.loaded_dbapi.Error as exc:
        gone, error = _statement_error(engine, exc, cursor.connection)
        healthy = not gone  # (in autocommit the failed statement took its transaction with it)
        raise error from exc
    finally:
        if fairy is not None:
            _return_to_pool(fairy, cursor.connection, healthy)
        elif healthy:
            lane.give_back(cursor)
        else:
            lane.forget(cursor)
        if gone:
            engine.dispose(close=False)  # (which closes the lane's idle connections too)


def _statement_error(engine: Engine, exc: Any, raw: Any) -> tuple[bool, sa.exc.StatementError]:
    """A driver's error as SQLAlchemy raises it (a stopped server is then an ``OperationalError``, which the API
    answers 503 for), and whether it lost the connection (the caller then renews the pool)."""
    gone = bool(engine.dialect.is_disconnect(exc, raw, None) or raw.closed or raw.broken)
    return gone, sa.exc.DBAPIError.instance(None, None, exc, engine.dialect.loaded_dbapi.Error,
                                            connection_invalidated=gone, dialect=engine.dialect)


def _checkout_autocommit(engine: Engine) -> tuple[Any, Any]:
    """A connection of the pool (pinged by it when it sat unused) switched to autocommit: SQLAlchemy's wrapper and
    the psycopg connection."""
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        fairy = engine.raw_connection()
    except dbapi_error as exc:  # no connection to be had (the server is down): as SQLAlchemy raises it
        raise sa.exc.DBAPIError.instance(None, None, exc, dbapi_error, connection_invalidated=True,
                                         dialect=engine.dialect) from exc
    raw: Any = fairy.driver_connection
    try:
        if raw.info.transaction_status != TransactionStatus.IDLE:
            raw.rollback()  # the pool's ping of a connection idle for a while left its SELECT's transaction open
        raw.autocommit = True
    except BaseException:
        fairy.invalidate()
        raise
    return fairy, raw


def _return_to_pool(fairy: Any, raw: Any, healthy: bool) -> None:
    """A connection :func:`autocommit` took from the pool goes back out of autocommit, or invalidated."""
    if not healthy:
        fairy.invalidate()
    try:  # never back to the pool in autocommit: the next transaction would commit statement by statement
        if not raw.closed:
            raw.autocommit = False
    except Exception as exc:
        fairy.invalidate(exc)
    fairy.close()


#: A pooled PostgreSQL connection idle for longer than this is pinged before use (``SELECT 1``); a connection used
#: more recently is trusted. A ping on every checkout (``pool_pre_ping``) costs a statement per transaction; a
#: server restart meanwhile costs one failed transaction, which invalidates the whole pool.
PING_AFTER_IDLE_SECONDS = 10.0

#: URL query parameter that marks a PostgreSQL URL as going through PgBouncer in transaction pooling mode.
PGBOUNCER_PARAM = "pgbouncer"
_pgbouncer_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _truthy(value: Any) -> bool:
    value = value[-1] if isinstance(value, tuple) else value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def split_pgbouncer(url: str) -> tuple[str, bool]:
    """``url`` without its ``pgbouncer=`` parameter (libpq would refuse it) and whether it was set true."""
    parsed = sa.engine.make_url(url)
    if PGBOUNCER_PARAM not in parsed.query:
        return url, False
    flag = _truthy(parsed.query[PGBOUNCER_PARAM])
    return parsed.difference_update_query([PGBOUNCER_PARAM]).render_as_string(hide_password=False), flag


def behind_pgbouncer(engine: Engine) -> bool:
    """Whether ``engine`` talks to PostgreSQL through PgBouncer in transaction mode: no server-side prepared
    statements, no LISTEN (its session is not ours between transactions), no session state."""
    return engine in _pgbouncer_engines


def listen_available(engine: Engine) -> bool:
    """LISTEN/NOTIFY can wake this process: PostgreSQL reached directly (not through a transaction pooler)."""
    return engine.dialect.name == "postgresql" and not behind_pgbouncer(engine)


def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """Ping a connection that sat in the pool for a while (the server may have restarted since)."""
    last = record.info.get("mm_checked_in")
    if last is not None and time.monotonic() - last < PING_AFTER_IDLE_SECONDS:
        return
    try:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("SELECT 1")
        finally:
            cur.close()
    except Exception as exc:  # the pool drops this connection and checks out another
        raise sa.exc.DisconnectionError(str(exc)) from exc


def answers(conn: Connection) -> bool:
    """Whether ``conn`` (not in a transaction) still reaches its server: ``SELECT 1``, as the pool pings a connection
    that sat unused for ``PING_AFTER_IDLE_SECONDS``. False when it does not (SQLAlchemy then invalidated it)."""
    try:
        conn.exec_driver_sql("SELECT 1")
        conn.rollback()
    except sa.exc.DBAPIError:
        return False
    return True


def _note_checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info["mm_checked_in"] = time.monotonic()


def plain_engine(url: str, **kwargs: Any) -> Engine:
    """A bare engine for one-off work (migrations, checks): no pool hooks, the ``pgbouncer`` flag honoured."""
    url, pgbouncer = split_pgbouncer(url) if not url.startswith("sqlite") else (url, False)
    if pgbouncer:
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "prepare_threshold": None}
    return sa.create_engine(url, **kwargs)


def create_db_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20, echo: bool = False,
                     pg_options: str = "", pgbouncer: bool = False) -> Engine:
    """Create an engine for a sqlite:// or postgresql+psycopg:// URL.

    ``pg_options``: server settings for every PostgreSQL session (libpq ``options``); ``options``
    given in the URL come after them, so they win.

    ``pgbouncer`` (or ``?pgbouncer=true`` in the URL): the server is reached through PgBouncer in transaction
    pooling mode. psycopg then never prepares statements on the server (a prepared statement lives in one server
    session, and the next transaction may get another), startup ``options`` are not sent (PgBouncer refuses
    them: set those timeouts on the role instead), and :func:`listen_available` is false, so workers and the
    API poll instead of LISTENing.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            create_private_file(Path(path))  # 0600 before SQLite creates it with the umask's mode
        engine = sa.create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "isolation_level": None,
                                          "timeout": 30},
            pool_size=pool_size, max_overflow=max_overflow,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    url, flagged = split_pgbouncer(url)
    pgbouncer = pgbouncer or flagged
    connect_args: dict[str, Any] = {}
    if pgbouncer:
        connect_args["prepare_threshold"] = None
    elif pg_options:
        given = sa.engine.make_url(url).query.get("options")
        connect_args["options"] = " ".join([pg_options, *([given] if isinstance(given, str) else given or ())])
    # LIFO: the connection used last is used next, so a few stay warm (and trusted without a ping) and the
    # others are not kept busy for nothing
    engine = sa.create_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow, pool_use_lifo=True,
                              pool_recycle=1800, connect_args=connect_args)
    event.listen(engine, "connect", _note_checkin)  # a new connection needs no ping
    event.listen(engine, "checkout", _ping_if_idle)
    event.listen(engine, "checkin", _note_checkin)
    if pgbouncer:
        _pgbouncer_engines.add(engine)
    return engine


@dataclass(frozen=True)
class PgNetwork:
    """Network timeouts of PostgreSQL connections, as libpq connection parameters.

    The client-side ones (connect timeout, keepalives) travel in the URL's query string, so
    every connection made from the engine's URL gets them — the pool and the LISTEN connections
    built from ``engine.url``. The server-side ones go in the startup packet's ``options`` of
    pooled connections. Parameters already in the configured URL win.
    """

    connect_timeout: int = 10
    keepalives_idle: int = 30
    keepalives_interval: int = 10
    keepalives_count: int = 3
    idle_in_transaction_timeout: float = 60
    statement_timeout: float = 300

    def url_parameters(self) -> dict[str, str]:
        """Client-side libpq parameters."""
        params: dict[str, str] = {}
        if self.connect_timeout:
            params["connect_timeout"] = str(self.connect_timeout)
        if self.keepalives_idle:
            params.update(keepalives="1", keepalives_idle=str(self.keepalives_idle),
                          keepalives_interval=str(self.keepalives_interval),
                          keepalives_count=str(self.keepalives_count),
                          # unacknowledged writes count too: a link cut mid-send is dead as soon as probes say so
                          tcp_user_timeout=str(1000 * (self.keepalives_idle
                                                       + self.keepalives_interval * self.keepalives_count)))
        return params

    def session_options(self) -> str:
        """Server settings of each session, as libpq ``options`` (``-c name=value`` …)."""
        return " ".join(f"-c {name}={int(seconds * 1000)}" for name, seconds in
                        (("idle_in_transaction_session_timeout", self.idle_in_transaction_timeout),
                         ("statement_timeout", self.statement_timeout)) if seconds)

    def apply(self, url: str) -> str:
        """``url`` with the client-side parameters added (PostgreSQL only; other URLs are returned unchanged)."""
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() != "postgresql":
            return url
        merged = {**self.url_parameters(), **dict(parsed.query)}
        return parsed.set(query=merged).render_as_string(hide_password=False)


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def ping(engine: Engine) -> None:
    """One round trip to the database (raises the driver's error when it does not answer)."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


#: Key of the PostgreSQL advisory lock migrations hold (any constant bigint; "mmmigrat" in ASCII).
MIGRATION_LOCK_KEY = 0x6D6D6D6967726174


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations (``mediamill db upgrade``; ``serve``, ``worker`` and ``api`` run it on start).

    Holds the migration lock, so processes started at once on a fresh database take turns: the
    first creates the schema, the others find it done. Refuses a database migrated by newer code.
    """
    from alembic import command

    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        if parsed.database not in (None, "", ":memory:"):
            create_private_file(Path(parsed.database))  # 0600 before the version check opens it with the umask's mode
        with migration_lock(url):
            check_schema_version(url, allow_behind=True)
            command.upgrade(alembic_config(url), revision)
        return
    engine = plain_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            lock_migrations(conn)
            _refuse_unknown(_revision_on(conn), allow_behind=True)
            cfg = alembic_config(split_pgbouncer(url)[0])
            cfg.attributes["connection"] = conn  # the migrations run in the transaction that holds the lock
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def lock_migrations(conn: Connection, *, timeout: float = 600.0) -> None:
    """PostgreSQL: take the migration lock for the rest of ``conn``'s transaction.

    A transaction-level advisory lock (released at commit or rollback, or when the connection drops, so a
    killed migrator never leaves it held), so it is right behind PgBouncer in transaction mode too, where a
    session-level lock could be taken on one server session and released on another. The schema changes run
    in the same transaction (PostgreSQL's DDL is transactional).
    """
    # lock_timeout bounds the wait for the advisory lock (set_config: SET takes no parameters; local: this
    # transaction only)
    conn.execute(sa.text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(timeout * 1000)}ms"})
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})


@contextlib.contextmanager
def migration_lock(url: str, *, timeout: float = 600.0) -> Iterator[None]:
    """Serialize schema changes between processes, possibly on different hosts.

    SQLite: an exclusive ``flock`` on ``<database>.migrate.lock`` next to the file (SQLite is one host).
    PostgreSQL: a transaction-level advisory lock held by a transaction of its own for the block (callers
    that change the schema use :func:`lock_migrations` in their own transaction instead).
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with _sqlite_file_lock(parsed.database or "", timeout):
            yield
        return
    engine = plain_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            lock_migrations(conn, timeout=timeout)
            yield
    finally:
        engine.dispose()


@contextlib.contextmanager
def _sqlite_file_lock(path: str, timeout: float) -> Iterator[None]:
    if path in ("", ":memory:"):
        yield  # a private in-memory database has no other process to race
        return
    lock_path = Path(f"{path}.migrate.lock")
    create_private_file(lock_path)
    deadline = time.monotonic() + timeout
    with lock_path.open("a") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"waited {timeout:.0f} s for the migration lock {lock_path}") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def code_head() -> str:
    """The newest schema revision this code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is part of this code's migration history."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(revision) is not None
    except (CommandError, KeyError):
        return False


def check_schema_version(url: str, *, allow_behind: bool) -> str | None:
    """Refuse to run this code against a database schema it does not know; return the database's revision.

    A revision missing from this code's history means newer code migrated the database: running
    older code on it could write rows the newer schema does not expect, so it stops with both
    revisions named. ``allow_behind=False`` (``--no-migrate``) also refuses a database that is
    not migrated up to this code's head.
    """
    engine = plain_engine(url, poolclass=sa.pool.NullPool)
    try:
        db_rev = current_revision(engine)
    finally:
        engine.dispose()
    return _refuse_unknown(db_rev, allow_behind=allow_behind)


def _refuse_unknown(db_rev: str | None, *, allow_behind: bool) -> str | None:
    head = code_head()
    if db_rev is not None and not known_revision(db_rev):
        raise SchemaTooNew(
            f"the database schema is at revision {db_rev!r}, which this mediamill {__version__} does not know "
            f"(its newest is {head!r}): newer code migrated this database. Run the mediamill version that "
            "migrated it (or newer); do not run older code against a newer schema.")
    if not allow_behind and db_rev != head:
        shown = "no schema" if db_rev is None else f"revision {db_rev!r}"
        raise SchemaBehind(
            f"the database schema is at {shown} but this mediamill {__version__} needs {head!r}, and "
            "--no-migrate was given: run `mediamill db upgrade` (or the migrate job) first.")
    return db_rev


def _revision_on(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


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
    engine = plain_engine(url, poolclass=sa.pool.NullPool)
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
