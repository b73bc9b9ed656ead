"""A chunked encode on a small fleet that shares nothing but the database and S3 (moto): three worker
processes, each with its own data folder, so the source, the parts and the renditions travel through S3."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.runtime import Runtime
from mediamill.storage.s3 import S3Storage
from tests.chunked_media import make_gop_clip, rendition_facts
from tests.engine.conftest import FAST, worker_process
from tests.engine.test_chunked import FINAL, _ladder, _segments, _video_workflow
from tests.fleet.support import FLEET_SECRET_KEY, stop
from tests.helpers import make_runtime, moto_s3, wait_until


@pytest.fixture
def s3_rt(backend_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    with moto_s3(monkeypatch, MEDIAMILL_SECRET_KEY=FLEET_SECRET_KEY):  # hosts share the install key
        rt = make_runtime(tmp_path / "api", backend_url, storage_url="s3://chunks/mm", **FAST)
        assert isinstance(rt.storage, S3Storage)
        rt.storage.ensure_bucket()
        yield rt
        rt.close()


def test_chunked_encode_through_s3_on_three_hosts(s3_rt: Runtime, tmp_path: Path) -> None:
    rt = s3_rt
    clip = make_gop_clip(tmp_path / "gop.mp4")
    _video_workflow(rt, "WF-SPLIT-S3", _ladder(parallel=3), queue="s3video")
    job = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, clip),
                                              workflow_code="WF-SPLIT-S3")).id
    hosts: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(3):
            hosts.append(worker_process(rt, "--pool", "s3video=1", env={
                "MEDIAMILL_DATA_DIR": str(tmp_path / f"host{n}"), "MEDIAMILL_STORAGE_URL": "s3://chunks/mm",
                "MEDIAMILL_LEASE_SECONDS": "5"}))
        try:
            d = wait_until(lambda: (x := ops.get_job(rt.engine, job))["status"] in FINAL and x, timeout=240,
                           interval=0.3, message="the chunked job finished")
        except AssertionError:
            logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in Path(rt.settings.data_dir).glob("*.log"))
            raise AssertionError(f"job not finished: {ops.get_job(rt.engine, job)['status']}\n{logs}") from None
    finally:
        for proc in hosts:
            stop(proc)
    assert d["status"] == "completed", d.get("error_message")
    rows = _segments(rt, job)
    assert len(rows) == 4 and all(r["status"] == "completed" and r["attempts"] == 1 for r in rows)
    # the parts went through S3 and were deleted after the join
    assert all(not rt.storage.exists(k) for r in rows for k in r["output_keys"])
    for o in d["outputs"]:
        local = rt.storage.get_to_file(o["storage_key"], tmp_path / "check" / o["name"])
        facts = rendition_facts(local)
        assert facts.frames == 300 and facts.pts_monotonic and facts.dts_monotonic and facts.even_spacing
        assert facts.audio_duration is not None and abs(facts.audio_duration - 12.0) < 0.05
