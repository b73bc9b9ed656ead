"""Test tiers as markers, from where a test lives and what it runs on.

- ``unit``: ``tests/unit/`` (no database, no processes);
- ``postgres``: every PostgreSQL variant (a ``postgres`` parameter, or a fixture that needs the server);
- ``slow``: the end-to-end and reliability folders (whole workers, real media, kills).

``pytest -m unit`` is the fast tier; ``pytest -m "not slow and not browser"`` skips the long ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SLOW_FOLDERS = ("e2e", "reliability")
PG_FIXTURES = ("pg_rt", "pg_url", "pg_seeded", "pg_engine", "pg_runtime", "pg_cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(HERE).parts
        if parts[0] == "unit":
            item.add_marker(pytest.mark.unit)
        if parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec else ()
        if any(p in ("postgres", "postgresql") for p in params if isinstance(p, str)) \
                or any(f in PG_FIXTURES for f in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
