"""The SDK against a real ``mediamill serve`` on loopback, through a proxy that cuts connections:
a 50 MiB upload cut halfway resumes from the server's offset, ``wait`` follows the job over SSE
through a dropped stream without a gap or a duplicate, and every output downloads byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from pathlib import Path

import httpx

from mediamill.client import AsyncClient, Client, StatusEvent
from tests.client.conftest import FIFTY_MB, Server
from tests.client.proxy import Cuts, CuttingProxy


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_upload_cut_halfway_resumes_sse_drop_and_downloads(sqlite_server: Server, big_wav: Path,
                                                           tmp_path: Path) -> None:
    cuts = Cuts(upload_after_bytes=FIFTY_MB // 2, stream_after_events=3)
    progress: list[int] = []
    events = []
    with CuttingProxy(sqlite_server.port, cuts) as proxy, \
            Client(proxy.url, sqlite_server.admin_key, chunk_size=FIFTY_MB * 2) as mm:
        accepted = mm.submit(big_wav, workflow="WF-AUDIO-TRANSCODE", metadata={"case": "resume"},
                             on_upload_progress=lambda sent, _total: progress.append(sent))
        job = mm.wait(accepted.id, timeout=240, on_event=events.append)
        upload_bytes = proxy.bytes_up

        # the upload was cut once, halfway, and continued from the server's offset (not from 0)
        assert cuts.done[0].startswith("upload"), cuts.done
        resumed = [b for a, b in itertools.pairwise(progress) if b < a]
        assert len(resumed) == 1, resumed
        # the proxy lets half of its last read (at most 32 KiB) past the threshold before it cuts
        assert FIFTY_MB // 4 < resumed[0] <= FIFTY_MB // 2 + 32768, resumed
        assert upload_bytes < FIFTY_MB * 1.6  # not sent twice
        assert progress[-1] == FIFTY_MB

        # the event stream was dropped once during wait() and resumed: no gap, no duplicate
        assert any(c.startswith("event stream") for c in cuts.done), cuts.done
        assert job.status == "completed", job.to_dict()
        ids = [e.id for e in events]
        assert ids == sorted(set(ids))
        assert ids == [e.id for e in job.events]
        assert isinstance(events[-1], StatusEvent) and events[-1].final and events[-1].status == "completed"

        # the input arrived intact; every output downloads with the bytes the server stored
        mm.download_input(accepted.id, tmp_path / "input.wav")
        assert sha256(tmp_path / "input.wav") == sha256(big_wav)
        outputs = mm.outputs(accepted.id)
        assert {"audio.mp3", "audio.m4a", "waveform.png"} <= {o.name for o in outputs}, outputs
        stored = {o.name: o.to_dict() for o in job.outputs}
        (tmp_path / "outputs").mkdir()
        for out in outputs:
            path = mm.download(accepted.id, out.name, tmp_path / "outputs")
            assert path == tmp_path / "outputs" / out.name
            on_server = sqlite_server.data_dir / "storage" / stored[out.name]["storage_key"]
            assert path.read_bytes() == on_server.read_bytes(), out.name
            assert path.stat().st_size == out.bytes
            if out.checksum:
                assert sha256(path) == out.checksum


def test_async_client_submit_wait_download(sqlite_server: Server, small_jpeg: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncClient(sqlite_server.url, sqlite_server.admin_key) as mm:
            accepted = await mm.submit(small_jpeg, workflow="WF-IMAGE-PROCESS", priority=7)
            seen: list[int] = []
            job = await mm.wait(accepted.id, timeout=120, on_event=lambda e: seen.append(e.id))
            assert job.status == "completed"
            assert seen and seen == [e.id for e in job.events]
            listed = [j.id async for j in mm.jobs(page_size=1, limit=3)]
            assert accepted.id in listed and len(listed) == len(set(listed))
            for out in await mm.outputs(accepted.id):
                path = await mm.download(accepted.id, out.name, tmp_path)
                assert path is not None and path.stat().st_size == out.bytes

    asyncio.run(main())


def test_jobs_iterates_keyset_pages(sqlite_server: Server, small_jpeg: Path) -> None:
    with Client(sqlite_server.url, sqlite_server.admin_key) as mm:
        ids = [mm.submit(small_jpeg, workflow="WF-IMAGE-PROCESS").id for _ in range(3)]
        paged = [j.id for j in mm.jobs(page_size=2)]
        summary = mm.summary("1h")
        assert summary.window_seconds == 3600 and summary.submitted >= 3
        assert paged == sorted(paged, reverse=True)
        assert set(ids) <= set(paged)
        assert [j.id for j in mm.jobs(page_size=2, limit=3)] == paged[:3]
        for job_id in ids:
            assert mm.wait(job_id, timeout=120).done
        finished = next(mm.jobs(status="completed", limit=1))
        assert finished.finished_at is not None and finished.finished_at >= finished.submitted_at


def test_upload_started_elsewhere_continues_from_the_server_offset(sqlite_server: Server, small_jpeg: Path) -> None:
    data = small_jpeg.read_bytes()
    tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {sqlite_server.admin_key}"}
    created = httpx.post(f"{sqlite_server.url}/v1/uploads", headers={**tus, "Upload-Length": str(len(data))})
    upload_id = created.headers["location"].rsplit("/", 1)[-1]
    half = len(data) // 2
    first = httpx.patch(f"{sqlite_server.url}/v1/uploads/{upload_id}", content=data[:half],
                        headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert first.status_code == 204
    progress: list[int] = []
    with Client(sqlite_server.url, sqlite_server.admin_key) as mm:
        assert mm.upload_offset(upload_id) == half
        assert mm.upload(small_jpeg, upload_id=upload_id, on_progress=lambda s, _t: progress.append(s)) == upload_id
        state = mm.request("GET", f"/v1/uploads/{upload_id}").json()
    assert progress[0] == half and progress[-1] == len(data)
    assert state["complete"] and state["length"] == len(data) and state["mime"] == "image/jpeg"
