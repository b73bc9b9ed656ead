"""The migrated schema equals the table definitions (no drift), on SQLite and PostgreSQL; downgrade works."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mediamill.store.db import alembic_config, create_db_engine, current_revision, upgrade
from mediamill.store.tables import metadata
from tests.helpers import BACKENDS, database_url


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrated_schema_has_no_drift(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        engine = create_db_engine(url)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            diff = compare_metadata(ctx, metadata)
        assert diff == [], f"schema drift between migrations and tables: {diff}"
        assert current_revision(engine) is not None
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_is_idempotent_and_downgrade_empties(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        upgrade(url)  # a second upgrade is a no-op
        command.downgrade(alembic_config(url), "base")
        engine = create_db_engine(url)
        tables = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
        engine.dispose()
        assert tables == set()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    engine = create_db_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    engine.dispose()
