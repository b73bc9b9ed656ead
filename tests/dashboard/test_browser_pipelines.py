"""Changing pipelines from the dashboard, in a real browser (Playwright + Debian's Chromium): route a job
waiting in review from its page, edit routing rules with the live explain box, read a shadow report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from tests.dashboard.support import Keys, LiveServer, api, login, shot
from tests.helpers import apply_workflow, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def _submit(server: LiveServer, key: str, path: Path, workflow: str | None = None) -> dict[str, Any]:
    with api(server.url, key) as client, path.open("rb") as f:
        res = client.post("/v1/jobs", files={"file": (path.name, f)}, data={"workflow": workflow} if workflow else {})
    assert res.status_code == 202, res.text
    return dict(res.json())


def _status(server: LiveServer, key: str, job_id: int) -> str:
    with api(server.url, key) as client:
        return str(client.get(f"/v1/jobs/{job_id}").json()["status"])


def test_route_a_review_job_from_its_page(page: Any, server: LiveServer, keys: Keys, worker: Worker,
                                          video_file: Path) -> None:
    job = _submit(server, keys.admin, video_file)
    assert job["workflow"] == "WF-REVIEW"
    login(page, server.url, keys.operator, f"/jobs/{job['id']}")
    box = page.locator("#review")
    assert "WF-VIDEO-TRANSCODE" in box.inner_text() and "WF-VIDEO-ANALYZE" in box.inner_text()
    options = page.locator("#route-form select[name=workflow] option").all_text_contents()
    assert set(options) == {"WF-VIDEO-TRANSCODE", "WF-VIDEO-ANALYZE"}
    shot(page, "review-job")
    page.select_option("#route-form select[name=workflow]", "WF-VIDEO-TRANSCODE")
    page.click("#route-form button[type=submit]")
    page.wait_for_selector("#review", state="detached")  # the page reloads without the review box
    assert "WF-VIDEO-TRANSCODE" in page.inner_text(".facts")
    wait_until(lambda: _status(server, keys.admin, job["id"]) in ("completed", "failed"), timeout=150,
               message="routed job finished")
    assert _status(server, keys.admin, job["id"]) == "completed"
    page.wait_for_selector("#job-status .s-completed", timeout=30_000)
    assert "manual" in page.inner_text("#job-routing")
    shot(page, "review-job-routed")


def test_routing_rules_page_adds_reorders_and_explains(page: Any, server: LiveServer, keys: Keys,
                                                       rt: Runtime) -> None:
    login(page, server.url, keys.operator, "/routing")
    page.fill("#explain-form input[name=filename]", "clip.mp4")
    page.wait_for_selector("#explain-result [data-decision=review]")
    page.fill("#rule-form input[name=name]", "videos")
    page.fill("#rule-form input[name=condition]", "input.mime.startsWith('video/'")
    page.select_option("#rule-form select[name=workflow]", "WF-VIDEO-ANALYZE")
    page.click("#rule-form button[type=submit]")
    page.wait_for_selector(".toast.error")  # the broken condition is refused
    assert "syntax error at line 1, column" in page.inner_text(".toast.error")
    page.fill("#rule-form input[name=condition]", "input.mime.startsWith('video/')")
    page.click("#rule-form button[type=submit]")
    page.wait_for_selector("#rules tr[data-rule=videos]")
    page.fill("#rule-form input[name=name]", "analysis")
    page.fill("#rule-form input[name=condition]", "job.metadata.kind == 'analysis'")
    page.select_option("#rule-form select[name=workflow]", "WF-VIDEO-TRANSCODE")
    page.click("#rule-form button[type=submit]")
    page.wait_for_selector("#rules tr[data-rule=analysis]")
    page.fill("#explain-form input[name=metadata]", '{"kind": "analysis"}')
    page.wait_for_selector("#explain-result [data-decision=rule]")
    assert "rule videos" in page.inner_text("#explain-result")  # first match wins
    page.locator("#rules tr[data-rule=analysis] .handle").drag_to(page.locator("#rules tr[data-rule=videos]"),
                                                                  target_position={"x": 5, "y": 2})
    wait_until(lambda: page.locator("#rules tbody tr").first.get_attribute("data-rule") == "analysis",
               message="dragged to the top")
    page.wait_for_function("() => document.querySelector('#explain-result').innerText.includes('rule analysis')")
    assert page.locator("#rules tr.match").get_attribute("data-rule") == "analysis"
    with api(server.url, keys.admin) as client:
        names = [r["name"] for r in client.get("/v1/routing-rules").json()["items"]]
        assert names == ["analysis", "videos"]
        for r in client.get("/v1/routing-rules").json()["items"]:
            client.delete(f"/v1/routing-rules/{r['id']}")
    shot(page, "routing-rules")


THUMBS = {"code": "WF-DASH-THUMBS", "name": "thumbnails", "type": "image", "queue": "dash",
          "input_types": ["image/png"],
          "steps": [{"name": "Thumb", "action": "create_thumbnail", "params": {"size": 64}}]}


def test_shadow_report_renders_beside_the_editor(page: Any, server: LiveServer, keys: Keys, worker: Worker,
                                                 rt: Runtime, tmp_path: Path) -> None:
    from PIL import Image

    apply_workflow(rt, THUMBS)
    with rt.engine.begin() as conn:
        from mediamill.store import workflow_repo
        from mediamill.workflows.loader import validate_document

        candidate = {**THUMBS, "steps": [{**THUMBS["steps"][0], "params": {"size": 40}}]}
        workflow_repo.save_version(conn, validate_document(candidate), author="tests", activate=False)
    login(page, server.url, keys.admin, "/workflows/WF-DASH-THUMBS")
    assert "No shadow run" in page.inner_text("#shadow")
    page.select_option("#shadow-form select[name=version]", "2")
    page.fill("#shadow-form input[name=sample_percent]", "100")
    page.click("#shadow-form button[type=submit]")
    page.wait_for_selector("#shadow p[data-state=active]")

    ids = []
    for i, color in enumerate([(220, 20, 20), (20, 20, 220)]):
        path = tmp_path / f"pic{i}.png"
        Image.new("RGB", (200, 150), color).save(path)
        ids.append(_submit(server, keys.admin, path, "WF-DASH-THUMBS")["id"])
    with api(server.url, keys.admin) as client:
        def all_done() -> bool:
            shadows = [j for j in client.get("/v1/jobs?shadow=true&workflow=WF-DASH-THUMBS").json()["items"]]
            return len(shadows) == 2 and all(_status(server, keys.admin, j) == "completed"
                                             for j in ids + [s["id"] for s in shadows])
        wait_until(all_done, timeout=90, message="primaries and shadows completed")

    page.reload()
    page.wait_for_selector("#shadow-report")
    assert page.locator("#shadow-report tr[data-side=primary] td").first.inner_text() == "2"
    assert page.locator("#shadow-report tr[data-side=candidate] td").first.inner_text() == "2"
    pairs = page.inner_text("#shadow-pairs")
    assert "64×48 → 40×30" in pairs and "SSIM" in pairs and "hash distance" in pairs
    shot(page, "shadow-report")
    page.click("#shadow button:has-text('Roll out v2 to 10 %')")
    page.wait_for_selector("#rollout p[data-state=active]")
    assert "gets 10" in page.inner_text("#rollout")
    page.click("#rollout button:has-text('Abort')")
    page.wait_for_selector("#rollout p[data-state=aborted]")
