"""An HLS ladder straight from the API: output names with ``/`` are served, the master playlist's
relative URIs resolve to their siblings under ``/v1/jobs/{id}/outputs/``, and every playlist and
segment it references is fetchable — on local storage and on S3 (playlists are served by the API
itself there, segments redirect to presigned URLs). Names are never paths: ``.``/``..`` and empty
segments are refused."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from mediamill.engine import operations as ops
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from mediamill.workflows.loader import validate_document
from tests.helpers import moto_s3

from .media import make_video
from .support import Keys, LiveServer, make_runtime, wait_until

HLS_WORKFLOW = {
    "code": "WF-TEST-HLS", "name": "hls ladder", "type": "video", "queue": "test", "input_types": ["video/*"],
    "steps": [{"name": "Validate", "action": "validate_video"},
              {"name": "HLS", "action": "package_hls",
               "params": {"ladder": ["240p", "144p"], "segment_seconds": 1, "preset": "ultrafast"}}],
}


def _hls_job(rt: Runtime, live: LiveServer, key: str, tmp: Path) -> int:
    with rt.engine.begin() as conn:
        workflow_repo.save_version(conn, validate_document(HLS_WORKFLOW), author="tests")
    video = make_video(tmp / "clip.mp4", seconds=3.0)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        res = http.post("/v1/jobs", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")},
                        data={"workflow": "WF-TEST-HLS"}, headers=Keys.h(key))
        assert res.status_code == 202, res.text
        job_id = int(res.json()["id"])
    worker = Worker(rt, pools={"*": 1}).start()
    try:
        detail = wait_until(lambda: (d := ops.get_job(rt.engine, job_id))["status"] in ("completed", "failed")
                            and d, timeout=60, message="HLS job finished")
    finally:
        worker.stop(grace=5)
    assert detail["status"] == "completed", detail["error_message"]
    return job_id


def _uris(playlist: str) -> list[str]:
    return [ln.strip() for ln in playlist.splitlines() if ln.strip() and not ln.startswith("#")]


def _play(http: httpx.Client, master_url: str, key: str) -> dict[str, bytes]:
    """Fetch the master, every variant playlist and every segment as a player would: by resolving
    each URI against the URL of the playlist that lists it. Returns the bytes by absolute URL."""
    got: dict[str, bytes] = {}
    master = http.get(master_url, headers=Keys.h(key), follow_redirects=True)
    assert master.status_code == 200 and master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert str(master.url) == master_url  # served here, not redirected: relative URIs resolve under the API
    variants = _uris(master.text)
    assert len(variants) == 2 and all("/" in v and not v.startswith(("/", "http")) for v in variants), variants
    for variant in variants:
        url = urljoin(master_url, variant)
        playlist = http.get(url, headers=Keys.h(key), follow_redirects=True)
        assert playlist.status_code == 200, (url, playlist.text)
        segments = _uris(playlist.text)
        assert segments and all(s.endswith(".ts") for s in segments), playlist.text
        for segment in segments:
            seg_url = urljoin(url, segment)
            res = http.get(seg_url, headers=Keys.h(key), follow_redirects=True)
            assert res.status_code == 200, (seg_url, res.status_code)
            assert res.content[:1] == b"\x47", seg_url  # an MPEG-TS packet starts with the sync byte
            got[seg_url] = res.content
        got[url] = playlist.content
    got[master_url] = master.content
    return got


def _check_every_output_played(http: httpx.Client, job_id: int, key: str) -> None:
    items = http.get(f"/v1/jobs/{job_id}/outputs", headers=Keys.h(key)).json()["items"]
    hls = {o["url"]: o for o in items if o["name"].startswith("hls/")}
    master = next(url for url, o in hls.items() if o["name"] == "hls/master.m3u8")
    assert master.endswith(f"/v1/jobs/{job_id}/outputs/hls/master.m3u8")
    played = _play(http, master, key)
    assert set(played) == set(hls)  # every output of the ladder is referenced and fetched
    for url, data in played.items():
        assert len(data) == hls[url]["bytes"], url


def _raw_status(base: str, path: str, key: str) -> int:
    """GET ``path`` exactly as written (no client-side dot-segment normalisation)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                  "Connection: close\r\n\r\n".encode())
        head = s.recv(64).decode("latin-1")
    return int(head.split()[1])


#: ways of writing a path that leaves the job's outputs (or is not a plain output name)
TRAVERSALS = ["hls/../hls/master.m3u8", "hls/%2E%2E/hls/master.m3u8", "hls/./master.m3u8", "hls//master.m3u8",
              "%2E%2E/%2E%2E/%2E%2E/etc/passwd", "hls%5C..%5Cmaster.m3u8", "..%2F..%2Finput", "/hls/master.m3u8"]


def test_hls_ladder_plays_straight_from_the_api(rt: Runtime, keys: Keys, live: LiveServer, tmp_path: Path) -> None:
    job_id = _hls_job(rt, live, keys.submitter, tmp_path)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        _check_every_output_played(http, job_id, keys.viewer)
        other = http.get(f"/v1/jobs/{job_id}/outputs/hls/master.m3u8", headers=Keys.h(keys.other))
        assert other.status_code == 404  # another tenant's job stays invisible
    # output names are never paths
    assert _raw_status(live.url, f"/v1/jobs/{job_id}/outputs/hls/master.m3u8", keys.viewer) == 200
    for name in TRAVERSALS:
        assert _raw_status(live.url, f"/v1/jobs/{job_id}/outputs/{name}", keys.viewer) == 404, name


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    with moto_s3(monkeypatch) as port:
        yield port


def test_hls_ladder_plays_from_the_api_on_s3(s3_env: int, tmp_path: Path) -> None:
    rt = make_runtime(tmp_path / "data", storage_url="s3://hls-bucket/mm")
    rt.storage.ensure_bucket()  # type: ignore[attr-defined]
    keys = Keys(rt)
    try:
        with LiveServer(rt) as live:
            job_id = _hls_job(rt, live, keys.submitter, tmp_path)
            with httpx.Client(base_url=live.url, timeout=30) as http:
                _check_every_output_played(http, job_id, keys.viewer)
                segment = http.get(f"/v1/jobs/{job_id}/outputs/hls/240p/segment_00000.ts", headers=Keys.h(keys.viewer))
                assert segment.status_code == 307 and "X-Amz-Signature" in segment.headers["location"]
    finally:
        rt.close()
