"""The Sources page in Chromium: state and skipped files of a watch folder, pause and resume, the file list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mediamill.runtime import Runtime
from mediamill.sources import service
from mediamill.sources.intake import SourceRunner
from mediamill.store import sources_repo
from tests.dashboard.support import Keys, LiveServer, login, shot
from tests.helpers import wait_until


def _enabled(rt: Runtime, source_id: int) -> bool:
    with rt.engine.connect() as conn:
        return bool(sources_repo.get_source(conn, source_id)["enabled"])


def test_sources_page_shows_state_skipped_files_and_pauses(page: Any, server: LiveServer, keys: Keys, rt: Runtime,
                                                           tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "take me.txt").write_text("hello")
    (inbox / "lost.mov").symlink_to(inbox / "gone.mov")
    with rt.engine.begin() as conn:
        src = service.create(conn, rt.settings, tenant_id="default", data={
            "name": "dash-inbox", "kind": "folder", "path": str(inbox), "workflow": "auto", "settle_seconds": 0})
    with rt.engine.connect() as conn:
        row = sources_repo.get_source(conn, src["id"])
    runner = SourceRunner(rt, row, "dash-test")
    runner.run_once()
    runner.run_once()

    login(page, server.url, keys.operator, "/sources")
    line = page.locator("tr[data-source='dash-inbox']")
    line.wait_for()
    assert line.locator("td[data-skipped='1']").count() == 1
    page.locator("tr[data-skipped-file='lost.mov']").wait_for()
    assert "unreadable" in page.locator("tr[data-skipped-file='lost.mov']").inner_text()
    shot(page, "sources")
    line.get_by_role("button", name="Pause").click()
    wait_until(lambda: not _enabled(rt, src["id"]), timeout=10, message="source paused")
    line.locator(".badge.s-cancelled").wait_for()
    line.get_by_role("button", name="Resume").click()
    wait_until(lambda: _enabled(rt, src["id"]), timeout=10, message="source resumed")
    line.get_by_role("link", name="dash-inbox").click()
    page.locator("tr[data-file='take me.txt'][data-status='submitted']").wait_for()
    page.locator("tr[data-file='lost.mov'][data-status='skipped']").wait_for()
    shot(page, "source-detail")
