"""Wiring: settings → database engine, storage. One ``Runtime`` per process."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from functools import cached_property

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mediamill import installkey
from mediamill.config import Settings, load_settings
from mediamill.errors import ConfigError, TransientError
from mediamill.fsmode import private_dir
from mediamill.installkey import SecretBox
from mediamill.storage import Storage, open_storage
from mediamill.store.db import (
    PGBOUNCER_PARAM,
    PgNetwork,
    check_schema_version,
    create_db_engine,
    schema_state,
    upgrade,
)
from mediamill.store.installation import check_install_key
from mediamill.store.workflow_repo import install_builtins


@dataclass
class Runtime:
    settings: Settings = field(default_factory=load_settings)

    @cached_property
    def engine(self) -> Engine:
        network = pg_network(self.settings)
        return create_db_engine(network.apply(self.database_url), pg_options=network.session_options())

    @property
    def database_url(self) -> str:
        """The configured database URL; with ``MEDIAMILL_DB_PGBOUNCER`` it carries ``pgbouncer=true``, so every
        engine made from it (migrations and checks included) knows it goes through PgBouncer."""
        url = self.settings.effective_database_url
        if not self.settings.db_pgbouncer or url.startswith("sqlite"):
            return url
        return sa.engine.make_url(url).update_query_dict({PGBOUNCER_PARAM: "true"}).render_as_string(
            hide_password=False)

    @cached_property
    def storage(self) -> Storage:
        storage = open_storage(self.settings.effective_storage_url,
                               s3_public_endpoint=self.settings.s3_public_endpoint or None)
        storage.min_free_bytes = self.settings.storage_min_free_mb * 1024 * 1024
        return storage

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @cached_property
    def secret_box(self) -> SecretBox:
        """Encrypts secrets stored in the database (webhook channel secrets) under the install key."""
        return SecretBox.for_settings(self.settings)

    def migrate(self) -> None:
        """Bring the schema up to date, check the install key, and encrypt webhook secrets an older version
        stored in plain text."""
        from mediamill.notify.channels import seal_plaintext_secrets

        private_dir(self.settings.data_dir)
        # under the migration lock; with the connect timeout and keepalives but no statement timeout
        upgrade(pg_network(self.settings).apply(self.database_url))
        self.check_install_key()
        seal_plaintext_secrets(self.engine, self.secret_box)

    def check_install_key(self) -> None:
        """ConfigError unless this process has the install key the database was set up with."""
        check_install_key(self.engine, installkey.key_check(self.settings))

    def prepare(self, *, migrate: bool = True) -> None:
        """Migrate and install the built-in workflows (what ``serve``, ``worker`` and ``api`` do on start).

        ``migrate=False`` (``--no-migrate``: a migrate job owns the schema) changes no schema and
        refuses to start unless the database is exactly at this code's schema revision.
        Either way a database migrated by newer code is refused, naming both revisions.
        """
        if migrate:
            self.migrate()
        else:
            self.require_database()
            check_schema_version(self.database_url, allow_behind=False)
            self.check_install_key()
        install_builtins(self.engine)

    def refuse_newer_schema(self) -> None:
        """Stop when newer code migrated the database (for processes that never migrate, like the notifier)."""
        if schema_state(self.database_url) == "ready":
            check_schema_version(self.database_url, allow_behind=True)

    def require_database(self) -> None:
        """Refuse to go on without an existing, migrated database (and create nothing trying).

        Commands that only read or change an installation call this first: run from the wrong
        directory they would otherwise make a fresh database no server watches.
        """
        url = self.database_url
        try:
            state = schema_state(url)
        except sa.exc.DBAPIError as exc:
            raise TransientError(f"cannot reach the database at {_shown(url)}: {exc.orig}".strip()) from None
        if state == "missing":
            raise ConfigError(f"no mediamill database at {_shown(url)}. Set MEDIAMILL_DATA_DIR (or "
                              "MEDIAMILL_DATABASE_URL) to the server's, run this where `mediamill serve` runs, "
                              "or create a database with `mediamill db upgrade`.")
        if state == "empty":
            raise ConfigError(f"the database at {_shown(url)} has no mediamill schema: run `mediamill db upgrade` "
                              "(or check MEDIAMILL_DATA_DIR / MEDIAMILL_DATABASE_URL).")

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def pg_network(settings: Settings) -> PgNetwork:
    """The PostgreSQL network timeouts of ``settings``."""
    return PgNetwork(connect_timeout=settings.db_connect_timeout_seconds,
                     keepalives_idle=settings.db_keepalives_idle_seconds,
                     keepalives_interval=settings.db_keepalives_interval_seconds,
                     keepalives_count=settings.db_keepalives_count,
                     idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout_seconds,
                     statement_timeout=settings.db_statement_timeout_seconds)


def _shown(url: str) -> str:
    """The URL as a user may see it: the file path of SQLite, no password of PostgreSQL."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or url
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


def freeze_startup_heap() -> None:
    """Move what a long-running process (the API, a worker) imported and built while starting out of the garbage
    collector's reach. A full collection walks every tracked object, and mediamill's imports alone are ~100,000 of
    them: without this, each full collection of a worker (about one a drain of 10,000 jobs) paused its claims and
    writes for 50-100 ms, and the API's submits for up to ~200 ms (p99); frozen, such a collection walks only what
    was made since (2-4 ms in the same drain). Call it once, when starting is done: what is frozen is never
    collected (the little garbage starting leaves included: no full collection first, which in a test process of
    many apps would walk its whole heap on every start)."""
    gc.freeze()


def configure_observability(runtime: Runtime, role: str) -> None:
    """Structured logs and metrics for this process, when the observability package is present."""
    try:
        from mediamill.observability import logging as mm_logging
    except ImportError:
        return
    configure = getattr(mm_logging, "configure", None)
    if configure is not None:
        configure(runtime.settings, role)
