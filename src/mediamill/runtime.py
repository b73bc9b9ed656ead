"""Wiring: settings → database engine, storage. One ``Runtime`` per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.engine import Engine

from mediamill.config import Settings, load_settings
from mediamill.storage import Storage, open_storage
from mediamill.store.db import create_db_engine, upgrade
from mediamill.store.workflow_repo import install_builtins


@dataclass
class Runtime:
    settings: Settings = field(default_factory=load_settings)

    @cached_property
    def engine(self) -> Engine:
        return create_db_engine(self.settings.effective_database_url)

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.settings.effective_storage_url)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def migrate(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.settings.effective_database_url)

    def prepare(self) -> None:
        """Migrate and install the built-in workflows (what ``serve`` does on start)."""
        self.migrate()
        install_builtins(self.engine)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def configure_observability(runtime: Runtime, role: str) -> None:
    """Structured logs and metrics for this process, when the observability package is present."""
    try:
        from mediamill.observability import logging as mm_logging
    except ImportError:
        return
    configure = getattr(mm_logging, "configure", None)
    if configure is not None:
        configure(runtime.settings, role)
