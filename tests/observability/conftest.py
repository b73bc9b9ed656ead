"""The observability tests use the notify tests' database fixtures (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

from tests.notify.conftest import db_url, engine, settings

__all__ = ["db_url", "engine", "settings"]
