"""The workflow editor's action palette in Chromium: every action with its parameters (from
``GET /v1/actions``), a filter, and "Insert" adding a valid step skeleton that saves."""

from __future__ import annotations

from typing import Any

import pytest

from mediamill.actions.base import load_actions
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from tests.dashboard.support import Keys, LiveServer, login, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_palette_inserts_a_resize_image_step(page: Any, server: LiveServer, keys: Keys, rt: Runtime) -> None:
    login(page, server.url, keys.operator, "/workflows/new")
    page.wait_for_selector("#palette-list[data-state=ready]")
    page.wait_for_selector("#validation[data-state=ok]")
    assert "2 steps" in page.inner_text("#validation")
    listed = page.eval_on_selector_all("#palette .action", "els => els.map(e => e.dataset.action)")
    assert set(listed) == set(load_actions())
    resize = page.locator(".action[data-action=resize_image]")
    shown = resize.inner_text()
    assert "max_dimension — integer; default 2000; ≥ 1, ≤ 30000" in shown, shown
    assert 'one of "auto", "jpeg", "png", "webp", "avif"' in shown
    page.fill("#palette-filter", "max_dim")  # a parameter name finds its action
    assert page.locator("#palette .action:not([hidden])").count() == 1
    shot(page, "editor-palette")

    resize.locator("[data-insert]").click()
    source = page.input_value("#yaml")
    assert "  - name: Resize Image\n    action: resize_image\n    params:\n      max_dimension: 2000\n" in source
    page.wait_for_selector("#validation[data-state=ok]")
    page.wait_for_function("document.getElementById('validation').textContent.includes('3 steps')")
    selected = page.evaluate("(() => { const a = document.getElementById('yaml');"
                             " return a.value.slice(a.selectionStart, a.selectionEnd); })()")
    assert selected == "Resize Image"  # ready to be renamed
    page.click("#save")
    page.wait_for_url(f"{server.url}/workflows/WF-MY-PIPELINE")
    with rt.engine.connect() as conn:
        saved = workflow_repo.get_workflow(conn, "WF-MY-PIPELINE").definition
    step = saved.steps[-1]
    assert (step.name, step.action, step.params["max_dimension"]) == ("Resize Image", "resize_image", 2000)


def test_viewers_see_the_palette_without_insert_buttons(page: Any, server: LiveServer, keys: Keys) -> None:
    login(page, server.url, keys.viewer, "/workflows/WF-DASH-EDIT")
    page.wait_for_selector("#palette-list[data-state=ready]")
    assert page.locator(".action[data-action=transcode_video]").count() == 1
    assert page.locator("[data-insert]").count() == 0
