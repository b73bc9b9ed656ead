"""The numbers a person reads in the browser are the API's: after failures the overview shows them —
the failed count and error rate of ``GET /v1/analytics/summary`` — and keeps up live; failed jobs
say how long they ran; the live pill shows only where something is live. Playwright driving
Debian's Chromium against uvicorn with an in-process Worker; screenshots in test-artifacts/dashboard/."""

from __future__ import annotations

from typing import Any

import pytest

from mediamill.engine import operations as ops
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from tests.dashboard.support import Keys, LiveServer, api, login, shot
from tests.helpers import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
FINAL = ("completed", "partial", "failed", "cancelled")


def _submit(server: LiveServer, key: str, workflow: str) -> int:
    with api(server.url, key) as client:
        res = client.post("/v1/jobs", files={"file": ("note.txt", b"hello\n")}, data={"workflow": workflow})
    assert res.status_code == 202, res.text
    return int(res.json()["id"])


def _finished(rt: Runtime, ids: list[int]) -> None:
    wait_until(lambda: all(ops.get_job(rt.engine, i)["status"] in FINAL for i in ids), timeout=60,
               message="jobs finished")


def _summary(server: LiveServer, key: str, window: str) -> dict[str, Any]:
    with api(server.url, key) as client:
        res = client.get(f"/v1/analytics/summary?window={window}")
    assert res.status_code == 200, res.text
    return dict(res.json())


def _cards(page: Any) -> dict[str, str]:
    return {name: page.inner_text(f".kpis [data-figure={name}]") for name in ("failed", "finished", "error_rate")}


def test_overview_shows_failures_as_the_summary_counts_them(page: Any, server: LiveServer, keys: Keys,
                                                            worker: Worker, rt: Runtime) -> None:
    failed = [_submit(server, keys.admin, "WF-DASH-FAIL") for _ in range(4)]
    ok = [_submit(server, keys.admin, "WF-DASH-NOOP") for _ in range(2)]
    _finished(rt, failed + ok)
    login(page, server.url, keys.viewer)
    summary = _summary(server, keys.viewer, "24h")
    assert (summary["failed"], summary["finished"]) == (4, 6)
    assert _cards(page) == {"failed": "4", "finished": "6", "error_rate": f"{summary['error_rate'] * 100:.1f} %"}
    assert page.locator(".kpi[data-kpi=error-rate]").get_attribute("class") == "kpi warn"  # 66.7 % > 5 %
    attention = page.inner_text("[data-region=now]")
    for job_id in failed:
        assert ops.get_job(rt.engine, job_id)["job_code"] in attention
    shot(page, "overview-failures")

    # another failure while the page is open: the cards follow, still equal to the API's figures
    _finished(rt, [_submit(server, keys.admin, "WF-DASH-FAIL")])
    wait_until(lambda: page.inner_text(".kpis [data-figure=failed]") == "5", timeout=30,
               message="the overview updated live")
    summary = _summary(server, keys.viewer, "24h")
    assert summary["failed"] == 5
    assert _cards(page) == {"failed": "5", "finished": "7", "error_rate": f"{summary['error_rate'] * 100:.1f} %"}

    page.goto(server.url + "/?window=1h")
    hour = _summary(server, keys.viewer, "1h")
    assert _cards(page) == {"failed": str(hour["failed"]), "finished": str(hour["finished"]),
                            "error_rate": f"{hour['error_rate'] * 100:.1f} %"}


def test_failed_job_pages_and_the_live_pill(page: Any, server: LiveServer, keys: Keys, worker: Worker,
                                           rt: Runtime) -> None:
    job_id = _submit(server, keys.admin, "WF-DASH-FAIL")
    _finished(rt, [job_id])
    login(page, server.url, keys.viewer, f"/jobs/{job_id}")
    duration = page.inner_text("#job-duration")
    assert "failed after" in duration and "running" not in duration
    assert page.locator("#live-state").is_hidden()  # a finished job has nothing live to follow
    shot(page, "job-failed")

    page.goto(server.url + "/jobs")  # newest first: the job just submitted leads
    first = page.locator("table.jobs tbody tr").first
    assert first.get_attribute("data-job") == str(job_id)
    assert first.locator("td.duration").inner_text().startswith("failed after ")
    wait_until(lambda: page.locator("#live-state[data-state=on]").is_visible(), message="the jobs list is live")
    assert page.inner_text("#live-state") == "live"

    page.goto(server.url + "/upload")  # no stream on this page: no pill that reads as disconnected
    page.wait_for_timeout(500)
    assert page.locator("#live-state").is_hidden()
    shot(page, "upload-no-live-pill")


def test_a_stream_that_stops_says_so(page: Any, server: LiveServer, keys: Keys, worker: Worker) -> None:
    login(page, server.url, keys.viewer, "/queues")
    wait_until(lambda: page.locator("#live-state[data-state=on]").is_visible(), message="live stream open")
    page.evaluate("MM.pageStream.close(); MM.pageStream.onerror()")
    assert page.inner_text("#live-state") == "disconnected"
    assert page.locator("#live-state").is_visible()
