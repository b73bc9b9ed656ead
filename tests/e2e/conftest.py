"""Fixtures of the end-to-end tests: the sample media (made once per session) and, per test
module and backend, a prepared runtime with one running Worker (``pools={"*": 2}``) that every
test of the module shares — so "the next job on the same worker" is literally the same worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mediamill.engine.worker import Worker
from tests.e2e.support import E2EMedia, EngineEnv
from tests.helpers import BACKENDS, database_url, make_runtime


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> E2EMedia:
    return E2EMedia(tmp_path_factory.mktemp("e2e-media"))


@pytest.fixture(scope="module", params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineEnv]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"e2e-{backend}")
    with database_url(backend, tmp) as url:
        rt = make_runtime(tmp / "data", url, migrate=False)
        rt.prepare()  # migrate + install the five built-in workflows
        worker = Worker(rt, pools={"*": 2}).start()
        try:
            yield EngineEnv(backend, rt, worker)
        finally:
            worker.stop(grace=10)
            rt.close()
