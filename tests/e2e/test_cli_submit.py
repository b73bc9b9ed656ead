"""``mediamill submit … --wait`` in a subprocess against ``mediamill worker`` in another one, both on
the same data directory (SQLite + local storage): what a user types on a fresh install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediamill.config import Settings
from mediamill.engine import operations as ops
from mediamill.runtime import Runtime
from tests.helpers import apply_workflow, wait_until

STEPS = ("Validate Input", "Extract Metadata", "Transcode 1080p", "Transcode 720p", "Transcode 480p",
         "Generate Thumbnails", "Finalize Output")
OUTPUTS = ("video_1080p.mp4", "video_720p.mp4", "video_480p.mp4", "thumb_01.jpg", "thumb_05.jpg", "manifest.json")


def mediamill_cmd() -> list[str]:
    script = Path(sys.executable).with_name("mediamill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mediamill.cli.main"]


def cli_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env.update(MEDIAMILL_DATA_DIR=str(data_dir), COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


def mediamill(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*mediamill_cmd(), *args], env=cli_env(data_dir), cwd=data_dir.parent,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli") / "data"


@pytest.fixture(scope="module")
def prepared(data_dir: Path) -> Iterator[Runtime]:
    """The data directory as ``mediamill serve`` leaves it: migrated, built-in workflows installed."""
    rt = Runtime(Settings(data_dir=data_dir))
    rt.prepare()
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def worker_process(prepared: Runtime, data_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One ``mediamill worker`` for the module's tests."""
    log_path = data_dir.parent / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*mediamill_cmd(), "worker"], env=cli_env(data_dir), cwd=data_dir.parent,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            lease = prepared.settings.lease_seconds
            wait_until(lambda: proc.poll() is not None or ops.list_workers(prepared.engine, lease_seconds=lease),
                       timeout=60, message="the worker registered")
            assert proc.poll() is None, log_path.read_text()
            yield proc
        finally:
            proc.terminate()  # SIGTERM: the worker drains and stops
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_submit_wait_shows_steps_and_outputs(worker_process, prepared, data_dir, media):
    clip = data_dir.parent / "clip.mp4"
    clip.write_bytes(media.video_hd.read_bytes())
    done = mediamill(data_dir, "submit", clip.name, "--workflow", "WF-VIDEO-TRANSCODE", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = done.stdout + done.stderr
    for step in STEPS:  # the per-step progress bars, with their state in brackets (not eaten as markup)
        assert f"{step} [completed]" in shown, f"{step!r} not shown:\n{shown}"
    assert ": completed" in done.stdout
    for name in OUTPUTS:  # the outputs table
        assert name in done.stdout, f"{name} not listed:\n{done.stdout}"
    [job] = [j for j in ops.list_jobs(prepared.engine) if j["job_code"] in done.stdout]
    assert job["status"] == "completed" and job["input_filename"] == clip.name
    # the fused renditions (one ffmpeg run) each report progress, so each bar moves
    events = ops.get_job(prepared.engine, job["id"])["events"]
    moved = {e["step_name"] for e in events if e["event_type"] == "progress"}
    assert {"Transcode 1080p", "Transcode 720p", "Transcode 480p"} <= moved, moved


def test_submit_json(worker_process, prepared, data_dir, media):
    clip = data_dir.parent / "clip.mp4"
    clip.write_bytes(media.video.read_bytes())
    queued = mediamill(data_dir, "submit", clip.name, "--workflow", "WF-VIDEO-TRANSCODE", "--json")
    assert queued.returncode == 0, queued.stderr
    first = json.loads(queued.stdout)
    assert {"id", "job_code", "status"} <= set(first) and first["status"] == "queued"
    assert first["job_code"].startswith("JOB-")

    waited = mediamill(data_dir, "submit", clip.name, "--workflow", "WF-VIDEO-TRANSCODE", "--wait", "--json")
    assert waited.returncode == 0, waited.stderr
    second = json.loads(waited.stdout)  # --json keeps stdout pure JSON (no progress bars)
    assert second["status"] == "completed" and second["id"] != first["id"]
    assert {o["name"] for o in second["outputs"]} >= set(OUTPUTS)
    assert all(o["bytes"] and len(o["checksum"]) == 64 for o in second["outputs"])
    wait_until(lambda: ops.get_job(prepared.engine, first["id"])["status"] == "completed", timeout=60,
               message="the first job completed")


def test_submit_wait_failed_job_exits_non_zero(worker_process, data_dir, media):
    clip = data_dir.parent / "broken.mp4"
    clip.write_bytes(media.video_truncated.read_bytes())
    done = mediamill(data_dir, "submit", clip.name, "--workflow", "WF-VIDEO-TRANSCODE", "--wait")
    assert done.returncode == 1
    assert ": failed" in done.stdout and "truncated" in done.stdout, done.stdout


def test_submit_refuses_a_mislabelled_file_clearly(prepared, data_dir, media):
    clip = data_dir.parent / "notes.mp4"
    clip.write_bytes(media.text_as_mp4.read_bytes())
    done = mediamill(data_dir, "submit", clip.name, "--workflow", "WF-VIDEO-TRANSCODE")
    assert done.returncode != 0
    shown = done.stdout + done.stderr
    assert "text/plain" in shown and "WF-VIDEO-TRANSCODE" in shown and "Traceback" not in shown, shown


def test_a_refused_submit_leaves_nothing_in_storage(tmp_path, media):
    """The file is copied into storage before the job is refused; the refusal must delete it."""
    rt = Runtime(Settings(data_dir=tmp_path / "data"))
    rt.prepare()
    rt.close()
    clip = tmp_path / "empty.mp4"
    clip.write_bytes(b"")
    done = mediamill(tmp_path / "data", "submit", clip.name, "--workflow", "WF-VIDEO-TRANSCODE")
    assert done.returncode != 0 and "empty" in done.stdout + done.stderr
    inputs = tmp_path / "data" / "storage" / "inputs"
    leftovers = [p.name for p in inputs.rglob("*") if p.is_file()] if inputs.exists() else []
    assert not leftovers, leftovers


def test_submit_on_a_fresh_data_dir_refuses_then_knows_the_builtin_workflows(tmp_path, media):
    """Without a database `submit` refuses (no database nobody serves); after `db upgrade` it installs
    the built-in workflows itself."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(media.video.read_bytes())
    refused = mediamill(data_dir, "submit", clip.name, "--workflow", "WF-VIDEO-TRANSCODE", "--json")
    assert refused.returncode == 2 and "MEDIAMILL_DATA_DIR" in refused.stderr, refused.stderr
    assert list(data_dir.iterdir()) == []
    assert mediamill(data_dir, "db", "upgrade").returncode == 0
    done = mediamill(data_dir, "submit", clip.name, "--workflow", "WF-VIDEO-TRANSCODE", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no live worker serves queue 'video_processing'" in " ".join(done.stderr.split())


PARTIAL = """code: WF-CLI-PARTIAL
name: Partial on purpose
type: generic
steps:
  - name: First
    action: noop
  - name: Never Here
    action: noop
    when: job.priority > 99
  - name: Boom
    action: fail
    params: {error_class: invalid_input, message: "no [decodable] frame"}
    on_failure: continue
  - name: Last
    action: noop
"""


def test_submit_wait_shows_skipped_steps_and_why_a_job_is_partial(worker_process, prepared, data_dir):
    apply_workflow(prepared, PARTIAL)
    note = data_dir.parent / "note.txt"
    note.write_text("anything")
    done = mediamill(data_dir, "submit", note.name, "--workflow", "WF-CLI-PARTIAL", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    [skipped] = [line for line in done.stderr.splitlines() if "Never Here" in line]
    assert "[skipped]" in skipped and "100.0%" not in skipped and "skipped" in skipped.split("]", 1)[1], skipped
    assert "Boom [failed]" in done.stderr and "Last [completed]" in done.stderr, done.stderr
    assert ": partial — step 'Boom' failed (invalid_input): no [decodable] frame" in done.stdout, done.stdout
    job_id = next(j["id"] for j in ops.list_jobs(prepared.engine) if j["job_code"] in done.stdout)
    shown = mediamill(data_dir, "job", str(job_id)).stdout
    assert "partial — step 'Boom' failed (invalid_input): no [decodable] frame" in shown, shown
