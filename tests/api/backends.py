"""A runtime fixture over both databases, for the API tests whose SQL differs by dialect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediamill.runtime import Runtime

from .support import PG_URL, make_runtime, postgres_database


def runtime_on(backend: str, data_dir: Path, **overrides: Any) -> Iterator[Runtime]:
    """A prepared runtime on SQLite or on a fresh PostgreSQL database (skipped without a server)."""
    if backend == "sqlite":
        rt = make_runtime(data_dir, **overrides)
        yield rt
        rt.close()
        return
    if not PG_URL:
        pytest.skip("MEDIAMILL_TEST_POSTGRES_URL is not set")
    with postgres_database() as url:
        rt = make_runtime(data_dir, url, **overrides)
        yield rt
        rt.close()


BACKENDS = ["sqlite", "postgres"]
