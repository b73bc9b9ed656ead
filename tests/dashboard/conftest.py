"""Fixtures of the dashboard tests: one prepared runtime (built-ins + test workflows), a live
server and an in-process Worker per module, and one headless Chromium per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from tests.dashboard.support import CHROMIUM, CHROMIUM_ARGS, WORKFLOWS, Keys, LiveServer
from tests.helpers import apply_workflow, make_runtime


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path_factory.mktemp("dashboard") / "data", migrate=False)
    runtime.prepare()
    for doc in WORKFLOWS:
        apply_workflow(runtime, doc)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def keys(rt: Runtime) -> Keys:
    return Keys.create(rt)


@pytest.fixture(scope="module")
def server(rt: Runtime) -> Iterator[LiveServer]:
    with LiveServer(rt) as live:
        yield live


@pytest.fixture(scope="module")
def worker(rt: Runtime) -> Iterator[Worker]:
    w = Worker(rt, pools={"*": 2}).start()
    yield w
    w.stop(grace=10)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; console errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("dialog", lambda dialog: dialog.accept())
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture(scope="session")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.dashboard.support import make_video

    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4")
