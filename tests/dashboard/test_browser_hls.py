"""The job page of an HLS ladder in a real browser: the master playlist is offered to the native
<video> player where the browser plays HLS (a note and the playlist link elsewhere — hls.js is not
bundled), and the playlist and every segment it references are fetchable from the page's own
session through the API, resolved as a player resolves them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediamill.engine import operations as ops
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from tests.dashboard.support import Keys, LiveServer, api, login, shot
from tests.helpers import apply_workflow, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

HLS_WORKFLOW = {
    "code": "WF-BROWSER-HLS", "name": "hls ladder", "type": "video", "input_types": ["video/*"],
    "steps": [{"name": "HLS", "action": "package_hls",
               "params": {"ladder": ["240p", "144p"], "segment_seconds": 1, "preset": "ultrafast"}}],
}

#: what a player does: read the master, resolve each URI against the playlist's URL, read on
PLAY_JS = """async (master) => {
  const fetched = [];
  const get = async (url) => {
    const res = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    fetched.push([url, res.status]);
    return res;
  };
  const uris = (text) => text.split("\\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const top = await get(master);
  for (const variant of uris(await top.text())) {
    const vurl = new URL(variant, new URL(master, location.href)).href;
    const playlist = await get(vurl);
    for (const segment of uris(await playlist.text())) {
      const seg = await get(new URL(segment, vurl).href);
      const bytes = new Uint8Array(await seg.arrayBuffer());
      if (bytes[0] !== 0x47) fetched.push([seg.url, "not MPEG-TS"]);
    }
  }
  return fetched;
}"""


def test_job_page_offers_the_hls_ladder(page: Any, server: LiveServer, keys: Keys, worker: Worker, rt: Runtime,
                                        video_file: Path) -> None:
    apply_workflow(rt, HLS_WORKFLOW)
    with api(server.url, keys.admin) as client, video_file.open("rb") as f:
        res = client.post("/v1/jobs", files={"file": (video_file.name, f)}, data={"workflow": "WF-BROWSER-HLS"})
    assert res.status_code == 202, res.text
    job_id = int(res.json()["id"])
    wait_until(lambda: ops.get_job(rt.engine, job_id)["status"] == "completed", timeout=90, message="HLS job done")
    names = {o["name"] for o in ops.get_job(rt.engine, job_id)["outputs"]}

    login(page, server.url, keys.viewer, f"/jobs/{job_id}")
    master = f"/v1/jobs/{job_id}/outputs/hls/master.m3u8"
    video = page.locator("video[data-hls]")
    assert video.count() == 1 and video.get_attribute("data-hls") == master
    if page.evaluate("() => document.createElement('video').canPlayType('application/vnd.apple.mpegurl')"):
        assert video.get_attribute("src") == master  # native HLS: the player gets the playlist and plays it
        page.eval_on_selector("video[data-hls]", "v => { v.muted = true; return v.play(); }")
        page.wait_for_function("() => { const v = document.querySelector('video[data-hls]');"
                               " return v.readyState >= 2 && v.currentTime > 0.2; }", timeout=20_000)
        assert page.eval_on_selector("video[data-hls]", "v => v.videoWidth") > 0
        page.eval_on_selector("video[data-hls]", "v => v.pause()")
    else:
        assert page.locator(".hls-note").is_visible() and not video.is_visible()
    parts = page.locator("[data-region=hls-parts] a")
    assert parts.count() == len(names) - 1  # every variant playlist and segment, collapsed under the player

    fetched = page.evaluate(PLAY_JS, master)
    assert all(status == 200 for _url, status in fetched), fetched
    paths = {url.split(f"/v1/jobs/{job_id}/outputs/", 1)[1] for url, _status in fetched}
    assert paths | {"hls/master.m3u8"} == names  # the ladder is complete and all of it is reachable
    shot(page, "job-hls")
