"""Fixtures for the HTTP API tests (SQLite by default; PostgreSQL where a test asks for it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.runtime import Runtime

from .support import PG_URL, Keys, LiveServer, make_runtime, postgres_database


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path / "data")
    yield runtime
    runtime.close()


@pytest.fixture
def pg_rt(tmp_path: Path) -> Iterator[Runtime]:
    if not PG_URL:
        pytest.skip("MEDIAMILL_TEST_POSTGRES_URL is not set")
    with postgres_database() as url:
        runtime = make_runtime(tmp_path / "data", url)
        yield runtime
        runtime.close()


@pytest.fixture
def keys(rt: Runtime) -> Keys:
    return Keys(rt)


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt)) as c:
        yield c


@pytest.fixture
def live(rt: Runtime) -> Iterator[LiveServer]:
    with LiveServer(rt) as server:
        yield server
