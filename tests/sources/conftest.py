"""Fixtures for sources and deliveries: runtimes on SQLite and PostgreSQL, a workflow that accepts
anything, folders to watch, and moto's S3 server on loopback for buckets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mediamill.runtime import Runtime
from tests.helpers import BACKENDS, apply_workflow, database_url, make_runtime
from tests.storage.conftest import moto_endpoint, s3_env  # noqa: F401  (shared fixtures)

FAST = {"lease_seconds": 2, "poll_interval": 0.2, "retry_base_seconds": 0.05, "retry_max_seconds": 0.5,
        "source_settle_seconds": 0.6, "source_poll_seconds": 0.3, "source_tick_seconds": 0.1,
        "shutdown_grace_seconds": 2}
ANYTHING = {"code": "WF-INTAKE", "name": "Intake", "type": "generic", "input_types": ["*/*"], "queue": "intake",
            "steps": [{"name": "Look", "action": "noop"},
                      {"name": "Refuse bad ones", "action": "fail", "when": 'job.metadata.source.path.contains("bad")',
                       "params": {"error_class": "invalid_input", "message": "bad file"}}]}


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def rt(backend_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path / "data", backend_url, **FAST)
    apply_workflow(runtime, ANYTHING)
    yield runtime
    runtime.close()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path
