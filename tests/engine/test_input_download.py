"""On object storage a worker copies a job's input to its scratch folder only for steps that open it: a job made
of steps that never read the input (a wait, a webhook call, a manifest of earlier outputs) costs no download; and
earlier steps' outputs only for steps that open those (a manifest describes them from what their storing
measured)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mediamill.actions.base import get_action
from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.storage.s3 import S3Storage
from tests.engine.conftest import FAST, workflow
from tests.helpers import make_runtime, moto_s3, wait_until

FINAL = ("completed", "partial", "failed", "cancelled")


@pytest.fixture
def s3_rt(backend_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    with moto_s3(monkeypatch):
        rt = make_runtime(tmp_path / "data", backend_url, storage_url="s3://inputs/mm", **FAST)
        assert isinstance(rt.storage, S3Storage)
        rt.storage.ensure_bucket()
        yield rt
        rt.close()


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys the workers copy out of S3."""
    seen: list[str] = []
    original: Callable[..., Path] = S3Storage.get_to_file

    def counting(self: S3Storage, key: str, dest: Path, *args: Any, **kwargs: Any) -> Path:
        seen.append(key)
        return original(self, key, dest, *args, **kwargs)

    monkeypatch.setattr(S3Storage, "get_to_file", counting)
    return seen


def _run(rt: Runtime, code: str, source: Path) -> tuple[dict[str, Any], str]:
    job = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, source), workflow_code=code))
    d = wait_until(lambda: (x := ops.get_job(rt.engine, job.id))["status"] in FINAL and x, timeout=30,
                   message=f"job {job.id} finished")
    return d, str(d["input_key"])


def test_steps_that_never_open_the_input_do_not_download_it(s3_rt: Runtime, downloads: list[str],
                                                            tmp_path: Path) -> None:
    assert get_action("sleep").reads_input is False and get_action("finalize_job").reads_input is False
    assert get_action("create_thumbnail").reads_input is True
    source = tmp_path / "input.txt"
    source.write_text("an input the steps below never open\n")
    workflow(s3_rt, "WF-WAIT", [{"name": "wait", "action": "sleep", "params": {"seconds": 0.05}},
                                {"name": "manifest", "action": "finalize_job"}])
    workflow(s3_rt, "WF-READS", [{"name": "wait", "action": "sleep", "params": {"seconds": 0.05}},
                                 {"name": "size", "action": "validate_document"}], input_types=["*/*"])
    worker = Worker(s3_rt, pools={"q": 1}).start()
    try:
        waited, waited_key = _run(s3_rt, "WF-WAIT", source)
        assert waited["status"] == "completed", waited.get("error_message")
        assert waited_key not in downloads
        # one step that opens the input is enough: the worker copies it (once) for the job
        _read, read_key = _run(s3_rt, "WF-READS", source)
        assert read_key in downloads and downloads.count(read_key) == 1
    finally:
        worker.stop(grace=1)


def test_a_manifest_describes_earlier_outputs_without_downloading_them(s3_rt: Runtime, downloads: list[str],
                                                                       tmp_path: Path) -> None:
    """A job's run after a retry finds its earlier steps' outputs in object storage only: a manifest step lists
    them with the size and checksum their storing measured, without copying them (or the input, which no step
    left opens) back; a step that may open them (any action by default) gets each copied once."""
    from PIL import Image

    from mediamill.store.delivery_repo import job_outputs_of

    assert get_action("finalize_job").reads_outputs is False and get_action("sleep").reads_outputs is True
    source = tmp_path / "pic.jpg"
    Image.new("RGB", (320, 200), (200, 30, 30)).save(source, "JPEG")
    steps = [{"name": "thumb", "action": "create_thumbnail", "params": {"size": 64}},
             {"name": "flaky", "action": "fail", "params": {"times": 1}, "on_failure": "retry", "retry_count": 2}]
    workflow(s3_rt, "WF-DESCRIBE", [*steps, {"name": "manifest", "action": "finalize_job"}], input_types=["image/*"])
    workflow(s3_rt, "WF-OPENS", [*steps, {"name": "wait", "action": "sleep", "params": {"seconds": 0.01}}],
             input_types=["image/*"])
    worker = Worker(s3_rt, pools={"q": 1}).start()
    try:
        described, input_key = _run(s3_rt, "WF-DESCRIBE", source)
        assert described["status"] == "completed", described.get("error_message")
        # the run after the retry has no step left that opens the input: it is not copied again either
        assert downloads.count(input_key) == 1
        with s3_rt.engine.connect() as conn:
            rows = {r["name"]: r for r in job_outputs_of(conn, described["id"])}
        [thumb] = [r for name, r in rows.items() if name != "manifest.json"]
        assert thumb["storage_key"] not in downloads  # the manifest step did not fetch it
        manifest_path = tmp_path / "manifest.json"
        s3_rt.storage.get_to_file(rows["manifest.json"]["storage_key"], manifest_path)
        [entry] = json.loads(manifest_path.read_text())["outputs"]
        assert (entry["name"], entry["bytes"], entry["sha256"]) == (thumb["name"], thumb["bytes"], thumb["checksum"])

        opened, _key = _run(s3_rt, "WF-OPENS", source)
        assert opened["status"] == "completed", opened.get("error_message")
        with s3_rt.engine.connect() as conn:
            [opened_thumb] = job_outputs_of(conn, opened["id"])
        assert downloads.count(opened_thumb["storage_key"]) == 1
    finally:
        worker.stop(grace=1)
