"""Shared pieces of the end-to-end tests: a runtime with a real Worker on SQLite or PostgreSQL,
submit-and-wait, and the checks every finished job must pass (one execution per step, stored
outputs with size and sha256, the manifest agreeing with the output rows).

Media come from the generators of the media tests (``tests/media/conftest.py``); the few files
only these tests need are added by ``E2EMedia``.
"""

from __future__ import annotations

import collections
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, SubmittedJob, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from tests.helpers import wait_until
from tests.media.conftest import Media, run_ff

FINAL = ("completed", "partial", "failed", "cancelled")
JOB_TIMEOUT = 90.0


class E2EMedia(Media):
    """The media tests' sample set plus the files only the end-to-end tests use."""

    @property
    def analyze_clip(self) -> Path:
        """3 s, 320×180: two very different 1.5 s shots (a cut at 1.5 s) with a tone."""
        return self._once("analyze.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=1.5",
            "-f", "lavfi", "-i", "color=c=red:size=320x180:rate=25:duration=1.5",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=3",
            "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-movflags", "+faststart", str(p)))

    @property
    def short_clip(self) -> Path:
        """1 s at 10 fps with a tone: its last frame starts at 0.9 s, before the container's end."""
        return self._once("short_10fps.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10:duration=1",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=1",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
            str(p)))

    @property
    def slideshow(self) -> Path:
        """10 s at 1 fps (ten stills): the last picture is shown from 9 s to 10 s."""
        return self._once("slideshow_1fps.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=1:duration=10",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(p)))

    @property
    def large_jpeg(self) -> Path:
        """2400×1350: large enough that WF-IMAGE-PROCESS's "Resize Large" runs."""
        def make(p: Path) -> None:
            from tests.media.conftest import _gradient
            _gradient(2400, 1350).save(p, "JPEG", quality=85)
        return self._once("large.jpg", make)

    @property
    def png_as_mp4(self) -> Path:
        """A PNG whose name says MP4: the type comes from the bytes, never from the name."""
        return self._once("picture.mp4", lambda p: p.write_bytes(self.png_alpha.read_bytes()))


@dataclass
class EngineEnv:
    """A prepared runtime (migrated, built-ins installed) and one running Worker."""

    backend: str
    rt: Runtime
    worker: Worker

    def submit(self, path: Path, workflow: str, **kwargs: Any) -> tuple[SubmittedJob, str]:
        inp = store_input_file(self.rt.storage, path)
        job = submit_job(self.rt.engine, SubmitRequest(job_input=inp, workflow_code=workflow, **kwargs))
        assert inp.storage_key is not None
        return job, inp.storage_key

    def wait(self, job_id: int, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            detail = ops.get_job(self.rt.engine, job_id)
            return detail if detail["status"] in FINAL else None

        return wait_until(done, timeout=timeout, interval=0.05, message=f"job {job_id} finished")  # type: ignore[no-any-return]

    def run(self, path: Path, workflow: str, **kwargs: Any) -> dict[str, Any]:
        job, _key = self.submit(path, workflow, **kwargs)
        return self.wait(job.id)

    def stored(self, key: str) -> Path:
        local = self.rt.storage.local_path(key)
        assert local is not None and local.is_file(), f"{key} is not in storage"
        return local


# ----------------------------------------------------------------------------- checks
def executions_by_step(detail: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_step: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in detail["steps"]:
        by_step[s["step_name"]].append(s)
    return by_step


def workflow_step_names(env: EngineEnv, code: str) -> list[str]:
    with env.rt.engine.connect() as conn:
        return [s.name for s in workflow_repo.get_workflow(conn, code).definition.steps]


def assert_one_execution_per_step(env: EngineEnv, detail: dict[str, Any], expected: dict[str, str] | None = None
                                  ) -> None:
    """Every step of the job's workflow has exactly one execution, ``completed`` unless ``expected``
    says otherwise (a ``when:`` that was false → ``skipped``, a ``continue`` step → ``failed``)."""
    expected = expected or {}
    by_step = executions_by_step(detail)
    names = workflow_step_names(env, detail["workflow_code"])
    assert sorted(by_step) == sorted(names), f"executed {sorted(by_step)}, workflow has {names}"
    for name in names:
        execs = by_step[name]
        assert len(execs) == 1, f"{name}: {len(execs)} executions {[e['status'] for e in execs]}"
        want = expected.get(name, "completed")
        assert execs[0]["status"] == want, f"{name}: {execs[0]['status']} ({execs[0]['error_message']}), want {want}"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_outputs_stored(env: EngineEnv, detail: dict[str, Any]) -> dict[str, Path]:
    """Each output row has its bytes and sha256 and they match the stored object; all are visible.

    Returns the stored files by output name.
    """
    files: dict[str, Path] = {}
    executions = {s["id"]: s for s in detail["steps"]}
    assert detail["outputs"], "the job has no outputs"
    for row in detail["outputs"]:
        path = env.stored(row["storage_key"])
        assert row["bytes"] and row["bytes"] == path.stat().st_size, row["name"]
        assert row["checksum"] and len(row["checksum"]) == 64 and row["checksum"] == sha256_of(path), row["name"]
        assert row["visible"], f"{row['name']} is not visible"
        made_by = executions[row["step_execution_id"]]  # the output belongs to its step's completed execution
        assert made_by["step_name"] == row["step_name"] and made_by["status"] == "completed", row["name"]
        assert row["name"] not in files, f"two outputs named {row['name']}"
        files[row["name"]] = path
    return files


def assert_manifest(detail: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
    """finalize_job's manifest lists every other output with the same size and sha256 as its row."""
    manifest = json.loads(files["manifest.json"].read_text())
    rows = {r["name"]: r for r in detail["outputs"] if r["name"] != "manifest.json"}
    listed = {e["name"]: e for e in manifest["outputs"]}
    assert set(listed) == set(rows)
    for name, entry in listed.items():
        assert entry["bytes"] == rows[name]["bytes"] and entry["sha256"] == rows[name]["checksum"], name
        assert entry["step"] == rows[name]["step_name"]
    assert manifest["job"]["id"] == detail["id"] and manifest["job"]["job_code"] == detail["job_code"]
    return manifest


def assert_finished_cleanly(env: EngineEnv, detail: dict[str, Any], status: str = "completed") -> dict[str, Path]:
    assert detail["status"] == status, f"{detail['status']}: {detail['error_class']} {detail['error_message']}"
    assert detail["retry_count"] == 0 and detail["rescue_count"] == 0
    assert detail["dead_letter"] is None
    assert detail["completed_at"] is not None
    return assert_outputs_stored(env, detail)


def image_info(path: Path) -> tuple[str, int, int]:
    with Image.open(path) as im:
        im.load()  # a truncated file fails here, not only at open
        return (im.format or "").lower(), im.width, im.height
