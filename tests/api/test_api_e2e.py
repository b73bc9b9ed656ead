"""End to end on a real uvicorn server: tus upload (interrupted, resumed) → job by upload_id →
SSE progress to the final event → outputs download and probe. The same through a presigned PUT
on S3 storage (moto's server on loopback)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse
from tusclient import client as tus

from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from mediamill.workflows.loader import validate_document
from tests.helpers import moto_s3

from .media import VIDEO_WORKFLOW, make_video, probe
from .support import Keys, LiveServer, make_runtime, wait_until


def _install_video_workflow(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        workflow_repo.save_version(conn, validate_document(VIDEO_WORKFLOW), author="tests")


def _broken_patch(base: str, path: str, key: str, offset: int, payload: bytes, declared: int) -> None:
    """Send a PATCH whose body stops half way, then drop the connection (a network failure)."""
    host, port = base.removeprefix("http://").split(":")
    head = (f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(head + payload)
        # the network dies after the server read these bytes (uvicorn drops bytes still buffered
        # at a disconnect, so a test that closed at once would lose them all)
        time.sleep(0.5)


def _follow(base: str, key: str, job_id: int) -> list[Any]:
    with httpx.Client(base_url=base, timeout=60) as http, \
            connect_sse(http, "GET", f"/v1/jobs/{job_id}/events", headers=Keys.h(key)) as source:
        return list(source.iter_sse())


def _run_job(rt: Runtime, live: LiveServer, key: str, body: dict[str, Any], tmp: Path,
             workflow: str = "WF-TEST-VIDEO") -> list[dict[str, Any]]:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        res = http.post("/v1/jobs", json={**body, "workflow": workflow}, headers=Keys.h(key))
        assert res.status_code == 202, res.text
        job_id = res.json()["id"]
        worker = Worker(rt, pools={"*": 2}).start()
        try:
            events = _follow(live.url, key, job_id)
        finally:
            worker.stop(grace=5)
        kinds = {e.event for e in events}
        assert {"status", "step", "progress"} <= kinds, kinds
        last = events[-1].json()
        assert events[-1].event == "status" and last["data"]["status"] == "completed", last
        # resumable: after the last id nothing is left but the stream still ends
        with connect_sse(http, "GET", f"/v1/jobs/{job_id}/events",
                         headers=Keys.h(key, **{"Last-Event-ID": events[-2].id})) as source:
            assert [e.id for e in source.iter_sse()] == [events[-1].id]
        outputs = http.get(f"/v1/jobs/{job_id}/outputs", headers=Keys.h(key)).json()["items"]
        probed = []
        for video in (o for o in outputs if o["name"].endswith(".mp4")):
            got = http.get(video["url"], headers=Keys.h(key), follow_redirects=True)
            assert got.status_code == 200
            out = tmp / video["name"]
            out.write_bytes(got.content)
            probed.append(probe(out))
        assert probed and all(p["codec"] == "h264" and p["height"] % 2 == 0 for p in probed)
        return probed


def test_tus_interrupted_resumed_then_sse_and_download(rt: Runtime, keys: Keys, live: LiveServer,
                                                       tmp_path: Path) -> None:
    _install_video_workflow(rt)
    video = make_video(tmp_path / "clip.mp4", seconds=1.0, size="1280x720")
    size = video.stat().st_size
    client = tus.TusClient(f"{live.url}/v1/uploads", headers=Keys.h(keys.submitter))
    uploader = client.uploader(str(video), chunk_size=16 * 1024, metadata={"filename": "../../etc/clip.mp4"})
    uploader.upload(stop_at=32 * 1024)  # two chunks, then the client "crashes"
    path = "/v1/uploads/" + uploader.url.rsplit("/", 1)[1]
    _broken_patch(live.url, path, keys.submitter, 32 * 1024, video.read_bytes()[32 * 1024: 40 * 1024], 16 * 1024)
    def offset_now() -> int:
        head = httpx.head(f"{live.url}{path}", headers=Keys.h(keys.submitter, **{"Tus-Resumable": "1.0.0"}))
        return int(head.headers["upload-offset"])

    # the 8 KiB that arrived before the connection dropped are kept
    offset = wait_until(lambda: offset_now() == 40 * 1024 and 40 * 1024)
    resumed = client.uploader(str(video), url=uploader.url, chunk_size=16 * 1024)
    assert resumed.offset == offset
    resumed.upload()
    state = httpx.get(f"{live.url}{path}", headers=Keys.h(keys.submitter)).json()
    assert state["complete"] and state["length"] == size and state["mime"] == "video/mp4"
    assert state["filename"] == "clip.mp4"  # the path in the metadata never became a path
    probed = _run_job(rt, live, keys.submitter, {"upload_id": state["id"]}, tmp_path, "WF-VIDEO-TRANSCODE")
    assert {p["height"] for p in probed} >= {720, 480}  # the ladder, never above the 720p source


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Any:
    with moto_s3(monkeypatch) as port:
        yield port


def test_presigned_put_to_s3_then_job(s3_env: int, tmp_path: Path) -> None:
    from mediamill.storage.s3 import S3Storage

    rt = make_runtime(tmp_path / "data", storage_url="s3://media-bucket/mm")
    assert isinstance(rt.storage, S3Storage)
    rt.storage.ensure_bucket()
    _install_video_workflow(rt)
    keys = Keys(rt)
    video = make_video(tmp_path / "clip.mp4")
    with LiveServer(rt) as live:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            res = http.post("/v1/uploads/presign", json={"filename": "clip.mp4", "content_type": "video/mp4"},
                            headers=Keys.h(keys.submitter))
            assert res.status_code == 201, res.text
            grant = res.json()
            assert grant["url"].startswith(f"http://127.0.0.1:{s3_env}/")
            put = httpx.put(grant["url"], content=video.read_bytes(), headers=grant["headers"])
            assert put.status_code == 200, put.text
        probed = _run_job(rt, live, keys.submitter, {"upload_id": grant["upload_id"]}, tmp_path)
        assert probed == [{"codec": "h264", "width": 160, "height": 120}]
        with httpx.Client(base_url=live.url, timeout=30) as http:
            job = http.get("/v1/jobs?limit=1", headers=Keys.h(keys.submitter)).json()["items"][0]
            res = http.get(f"/v1/jobs/{job['id']}/input", headers=Keys.h(keys.submitter))
            assert res.status_code == 307 and "X-Amz-Signature" in res.headers["location"]
    rt.close()
