"""The dashboard in a real browser: Playwright driving Debian's Chromium against uvicorn on
127.0.0.1 with an in-process Worker. Every test saves a screenshot to test-artifacts/dashboard/."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store import auth_repo
from mediamill.store.tables import dead_letters, queues, workflow_definitions, workflow_jobs
from tests.dashboard.seed import seed
from tests.dashboard.support import Keys, LiveServer, api, login, shot
from tests.helpers import apply_workflow, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
shared: dict[str, Any] = {}  # the video job, reused by the job-detail test when both run


def _job(rt: Runtime, job_id: int) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        return dict(conn.execute(sa.select(workflow_jobs).where(workflow_jobs.c.id == job_id)).mappings().one())


def _submit_file(server: LiveServer, key: str, path: Path, workflow: str) -> int:
    with api(server.url, key) as client, path.open("rb") as f:
        res = client.post("/v1/jobs", files={"file": (path.name, f)}, data={"workflow": workflow})
    assert res.status_code == 202, res.text
    return int(res.json()["id"])


# ------------------------------------------------------------------------------ login
def test_login_with_key_and_one_time_link(page: Any, server: LiveServer, keys: Keys, rt: Runtime) -> None:
    page.goto(server.url + "/queues")
    page.wait_for_url(re.compile(r"/login\?next=/queues"))
    page.fill("#key", "mm_deadbeef_not-a-key")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")
    page.fill("#key", keys.admin)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/queues")  # back where the login began
    cookie = next(c for c in page.context.cookies() if c["name"] == "mm_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.context.clear_cookies()
    link = auth_repo.login_url(rt, server.url, keys.operator)
    page.goto(link)
    page.wait_for_url(server.url + "/")
    page.wait_for_selector(".kpis")
    assert page.inner_text(".who .role") == "operator"
    page.context.clear_cookies()
    page.goto(link)  # single use
    assert "expired or was already used" in page.inner_text("[role=alert]")


def test_overview(page: Any, server: LiveServer, keys: Keys, worker: Worker, rt: Runtime) -> None:
    seed(rt, 400, first=1_000_000, live=False)  # two days of history for the charts
    for _ in range(3):
        _submit_file(server, keys.admin, Path(__file__), "WF-DASH-NOOP")
    login(page, server.url, keys.admin)
    page.wait_for_selector(".kpis .kpi")
    labels = page.locator(".kpi .label").all_text_contents()
    for label in ("Throughput", "p95 duration", "Error rate", "Queue depth", "Live workers", "Open breakers",
                  "Firing alerts"):
        assert label in labels
    assert page.locator("svg.chart").count() == 3
    wait_until(lambda: page.locator("#live-state[data-state=on]").count() == 1, message="live stream open")
    shot(page, "overview")
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 18, 23)"
    shot(page, "overview-dark")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.click(".menu")
    assert page.is_visible("nav#nav a[href='/jobs']")
    shot(page, "overview-phone")


# ------------------------------------------------------------------------------ upload → live steps → player
def _step_states(page: Any, root: str) -> list[str]:
    return page.eval_on_selector_all(f"{root} li.step", "els => els.map(e => e.dataset.status)")


def test_upload_video_and_watch_steps_go_green(page: Any, server: LiveServer, keys: Keys, worker: Worker,
                                               rt: Runtime, video_file: Path) -> None:
    from mediamill.engine import operations as ops

    login(page, server.url, keys.admin, "/upload")
    page.evaluate("window.__sameDocument = true")
    page.select_option("#upload-workflow", "WF-VIDEO-TRANSCODE")
    # the job waits until the page shows it (else, on a loaded host, a short clip's job can finish before the
    # page's first look, and nothing is left to see change)
    ops.pause_queue(rt.engine, "video_processing")
    page.set_input_files("#upload-file", str(video_file))
    page.wait_for_selector(".followed-job li.step", timeout=30_000)
    assert page.eval_on_selector("#upload-progress", "p => p.value") == 100
    assert "completed" not in _step_states(page, ".followed-job")
    ops.resume_queue(rt.engine, "video_processing")
    seen: set[tuple[str, ...]] = set()
    deadline = time.monotonic() + 90
    while True:
        states = tuple(_step_states(page, ".followed-job"))
        seen.add(states)
        if states and all(s == "completed" for s in states):
            break
        assert "failed" not in states, states
        assert time.monotonic() < deadline, f"steps did not all complete: {states}"
        page.wait_for_timeout(50)
    # live: intermediate states were shown in this same document, without a reload
    assert any(0 < sum(s == "completed" for s in st) < len(st) for st in seen), seen
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_selector(".followed-job #job-status .s-completed")
    job_id = int(page.get_attribute(".followed-job [data-job-id]", "data-job-id"))
    assert _job(rt, job_id)["status"] == "completed"
    shared["video_job"] = job_id
    shot(page, "upload-live-steps")


def test_job_detail_plays_480p(page: Any, server: LiveServer, keys: Keys, worker: Worker, rt: Runtime,
                               video_file: Path) -> None:
    job_id = shared.get("video_job") or _submit_file(server, keys.admin, video_file, "WF-VIDEO-TRANSCODE")
    wait_until(lambda: _job(rt, job_id)["status"] == "completed", timeout=90, message="video job completed")
    login(page, server.url, keys.viewer, f"/jobs/{job_id}")
    assert page.locator("li.step[data-status=completed]").count() == page.locator("li.step").count() >= 5
    video = page.locator("video[data-name*='480']").first
    video.scroll_into_view_if_needed()
    page.eval_on_selector("video[data-name*='480']", "v => { v.muted = true; return v.play(); }")
    page.wait_for_function("() => { const v = document.querySelector(\"video[data-name*='480']\");"
                           " return v.readyState >= 2 && v.currentTime > 0.2; }", timeout=20_000)
    assert page.eval_on_selector("video[data-name*='480']", "v => v.videoWidth") > 0
    page.eval_on_selector("video[data-name*='480']", "v => v.pause()")
    assert page.locator(".outputs img").count() >= 1  # thumbnails
    shot(page, "job-detail")


# ------------------------------------------------------------------------------ workflow editor
def _current_version(rt: Runtime, code: str) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(sa.select(workflow_definitions.c.current_version)
                                .where(workflow_definitions.c.workflow_code == code)).scalar_one())


def test_workflow_editor_validate_save_rollback(page: Any, server: LiveServer, keys: Keys, rt: Runtime) -> None:
    login(page, server.url, keys.admin, "/workflows/WF-DASH-EDIT")
    page.wait_for_selector("#validation[data-state=ok]")
    source = page.input_value("#yaml")
    page.fill("#yaml", source.replace("action: noop", "action: no_such_action"))
    page.wait_for_selector("#validation[data-state=invalid]")
    assert "no_such_action" in page.inner_text("#validation")
    assert page.is_disabled("#save")
    shot(page, "workflow-editor")
    assert source.rstrip().splitlines()[-1].startswith("  ")  # steps come last in the dump
    page.fill("#yaml", source.rstrip() + "\n- name: Second\n  action: noop\n")
    page.wait_for_selector("#validation[data-state=ok]")
    assert "2 steps" in page.inner_text("#validation")
    page.fill("#comment", "add a second step")
    page.click("#save")
    page.wait_for_selector("tr[data-version='2'] .badge.s-completed")  # v2 is current after the reload
    assert _current_version(rt, "WF-DASH-EDIT") == 2
    page.click("tr[data-version='1'] [data-diff-from]")
    page.wait_for_selector("#diff .add")
    assert "Second" in page.inner_text("#diff")
    page.click("tr[data-version='1'] button[data-url]")  # roll back to v1
    page.wait_for_selector("tr[data-version='1'] .badge.s-completed")
    assert _current_version(rt, "WF-DASH-EDIT") == 1
    shot(page, "workflow-rolled-back")


# ------------------------------------------------------------------------------ dead letters
def test_retry_dead_letter_on_fixed_version(page: Any, server: LiveServer, keys: Keys, worker: Worker,
                                            rt: Runtime) -> None:
    job_id = _submit_file(server, keys.admin, Path(__file__), "WF-DASH-FAIL")
    wait_until(lambda: _job(rt, job_id)["status"] == "failed", timeout=30, message="job failed")
    with rt.engine.connect() as conn:
        dl_id = conn.execute(sa.select(dead_letters.c.id).where(dead_letters.c.job_id == job_id)).scalar_one()
    fixed = apply_workflow(rt, {**_fail_doc(), "steps": [{"name": "Boom", "action": "noop"}]})
    assert fixed.version == 2
    login(page, server.url, keys.operator, "/dead-letters")
    row = page.locator(f"tr[data-dead-letter='{dl_id}']")
    assert "invalid_input" in row.inner_text()
    assert "invalid_input" in page.inner_text("[data-region=groups]")
    row.locator("select[name=version]").select_option("2")
    shot(page, "dead-letters")
    row.locator("button[type=submit]").click()
    page.wait_for_selector(f"tr[data-dead-letter='{dl_id}']", state="detached")
    wait_until(lambda: _job(rt, job_id)["status"] == "completed", timeout=30, message="retried job completed")
    assert _job(rt, job_id)["workflow_version"] == 2


def _fail_doc() -> dict[str, Any]:
    from tests.dashboard.support import WORKFLOWS

    return next(w for w in WORKFLOWS if w["code"] == "WF-DASH-FAIL")


# ------------------------------------------------------------------------------ queues
def _paused(rt: Runtime, name: str) -> bool:
    with rt.engine.connect() as conn:
        return bool(conn.execute(sa.select(queues.c.paused).where(queues.c.name == name)).scalar())


def test_pause_and_resume_queue(page: Any, server: LiveServer, keys: Keys, rt: Runtime) -> None:
    login(page, server.url, keys.operator, "/queues")  # "dash" serves shared workflows: not the operator's to pause
    row = page.locator("tr[data-queue='dash']")
    assert row.get_by_role("button", name="Pause").count() == 0
    assert "the root admin pauses it" in row.inner_text()
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login"))
    login(page, server.url, keys.admin, "/queues")
    row.get_by_role("button", name="Pause").click()
    row.locator(".badge.s-paused").wait_for()
    assert _paused(rt, "dash")
    shot(page, "queue-paused")
    row.get_by_role("button", name="Resume").click()
    row.locator(".state .s-completed").wait_for()
    assert not _paused(rt, "dash")


# ------------------------------------------------------------------------------ roles and CSRF
def test_viewer_sees_no_action_buttons(page: Any, server: LiveServer, keys: Keys, rt: Runtime,
                                       worker: Worker) -> None:
    job_id = _submit_file(server, keys.admin, Path(__file__), "WF-DASH-NOOP")
    wait_until(lambda: _job(rt, job_id)["status"] == "completed", timeout=30, message="job completed")
    login(page, server.url, keys.viewer)
    for path in ("/", "/jobs", f"/jobs/{job_id}", "/queues", "/dead-letters", "/breakers", "/workers",
                 "/notifications", "/alerts", "/workflows", "/workflows/WF-DASH-EDIT", "/upload"):
        page.goto(server.url + path)
        assert page.locator("button[data-url], form[data-api], button[data-bulk], #save").count() == 0, path
    page.goto(f"{server.url}/workflows/WF-DASH-EDIT")
    assert page.get_attribute("#yaml", "readonly") is not None
    page.goto(f"{server.url}/dead-letters")
    shot(page, "viewer-dead-letters")


def test_post_without_csrf_token_is_refused(page: Any, server: LiveServer, keys: Keys, rt: Runtime) -> None:
    login(page, server.url, keys.admin, "/queues")
    bare = page.evaluate("fetch('/v1/queues/dash/pause', {method: 'POST'}).then(r => r.status)")
    assert bare == 403
    assert not _paused(rt, "dash")
    forged = page.evaluate("fetch('/v1/queues/dash/pause', {method: 'POST', headers: {'X-CSRF-Token': 'forged'}})"
                           ".then(r => r.status)")
    assert forged == 403
    logout = page.context.request.post(server.url + "/logout", form={"csrf_token": ""}, max_redirects=0)
    assert logout.status == 403
    ok = page.evaluate("fetch('/v1/queues/dash/pause', {method: 'POST', headers: {'X-CSRF-Token': "
                       "document.querySelector('meta[name=csrf-token]').content}}).then(r => r.status)")
    assert ok == 200 and _paused(rt, "dash")
    page.evaluate("fetch('/v1/queues/dash/resume', {method: 'POST', headers: {'X-CSRF-Token': "
                  "document.querySelector('meta[name=csrf-token]').content}})")
    wait_until(lambda: not _paused(rt, "dash"), timeout=5, message="resumed")
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login"))
    shot(page, "logged-out")
