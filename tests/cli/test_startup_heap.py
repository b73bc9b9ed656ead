"""The long-running processes freeze their start-up heap out of the garbage collector's reach: a worker started by
``mediamill worker`` before it runs, the API's app when it starts (see ``runtime.freeze_startup_heap``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.cli import engine_cmds
from mediamill.engine.worker import Worker
from tests.api.support import make_runtime

#: mediamill's imports alone leave about 100,000 tracked objects; a frozen start-up heap holds at least this many
FROZEN_AT_LEAST = 20_000


@pytest.fixture
def thawed() -> Iterator[None]:
    """The test process's heap as the collector sees it without any earlier app's freeze, before and after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_worker_command_freezes_its_heap_before_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        thawed: None) -> None:
    for name in ("MEDIAMILL_DATABASE_URL", "MEDIAMILL_STORAGE_URL", "MEDIAMILL_METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(engine_cmds, "_setup_observability", lambda rt, role: None)  # (the test process's logs)
    frozen_when_run: list[int] = []
    monkeypatch.setattr(Worker, "run_forever", lambda self: frozen_when_run.append(gc.get_freeze_count()))
    assert gc.get_freeze_count() == 0

    engine_cmds._worker([], "heap", True, None)

    assert len(frozen_when_run) == 1
    assert frozen_when_run[0] >= FROZEN_AT_LEAST


def test_api_freezes_its_heap_when_it_starts(tmp_path: Path, thawed: None) -> None:
    rt = make_runtime(tmp_path / "data")
    try:
        app = create_app(rt)
        assert gc.get_freeze_count() == 0
        with TestClient(app) as client:
            assert gc.get_freeze_count() >= FROZEN_AT_LEAST
            assert client.get("/healthz").status_code == 200
    finally:
        rt.close()
