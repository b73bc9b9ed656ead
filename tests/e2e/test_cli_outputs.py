"""`mediamill outputs JOB [--dest DIR]`: a finished job's files under their own names, HLS sub-folders
included, checked against their recorded sha256, never overwriting a different file unasked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediamill.config import Settings
from mediamill.engine.outputs import destination
from mediamill.engine.worker import Worker
from mediamill.errors import InvalidInput
from mediamill.runtime import Runtime
from tests.e2e.support import E2EMedia
from tests.e2e.test_cli_submit import mediamill
from tests.helpers import apply_workflow

HLS = """code: WF-HLS-OUT
name: HLS for the outputs command
type: video_processing
queue: hls-out
steps:
  - name: Package
    action: package_hls
    params: {ladder: [240p], segment_seconds: 1}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, media: E2EMedia) -> Iterator[tuple[Path, dict]]:
    """A data dir with one completed HLS job (submitted and awaited through the CLI)."""
    data = tmp_path_factory.mktemp("outputs") / "data"
    rt = Runtime(Settings(data_dir=data))
    rt.prepare()
    apply_workflow(rt, HLS)
    worker = Worker(rt, pools={"hls-out": 1}).start()
    try:
        clip = data.parent / "clip.mp4"
        clip.write_bytes(media.video.read_bytes())
        done = mediamill(data, "submit", clip.name, "-w", "WF-HLS-OUT", "--wait", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        yield data, json.loads(done.stdout)
    finally:
        worker.stop(grace=10)
        rt.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outputs_land_under_their_names(finished: tuple[Path, dict]) -> None:
    data, job = finished
    names = {o["name"]: o for o in job["outputs"]}
    assert "hls/master.m3u8" in names and any(n.startswith("hls/240p/") and n.endswith(".ts") for n in names)
    saved = mediamill(data, "outputs", job["job_code"], "--json")  # by code; default folder ./<job code>
    assert saved.returncode == 0, saved.stderr
    doc = json.loads(saved.stdout)
    folder = data.parent / job["job_code"]
    assert Path(doc["dest"]) == Path(job["job_code"]) and {r["name"] for r in doc["items"]} == set(names)
    for name, out in names.items():
        path = folder / name
        assert path.is_file() and _sha(path) == out["checksum"], name
    assert "240p/" in (folder / "hls" / "master.m3u8").read_text()  # the playlist's relative paths resolve
    assert not list(folder.rglob(".*.part"))


def test_dest_option_table_and_no_silent_overwrite(finished: tuple[Path, dict], tmp_path: Path) -> None:
    data, job = finished
    dest = tmp_path / "here"
    first = mediamill(data, "outputs", str(job["id"]), "--dest", str(dest))
    assert first.returncode == 0 and "hls/master.m3u8" in first.stdout and "written" in first.stdout, first.stderr
    again = json.loads(mediamill(data, "outputs", str(job["id"]), "--dest", str(dest), "--json").stdout)
    assert {r["action"] for r in again["items"]} == {"unchanged"}
    master = dest / "hls" / "master.m3u8"
    master.write_text("# my own edits\n")
    refused = mediamill(data, "outputs", str(job["id"]), "--dest", str(dest))
    assert refused.returncode == 1 and "--overwrite" in refused.stderr and str(master) in refused.stderr
    assert master.read_text() == "# my own edits\n"  # nothing lost
    forced = mediamill(data, "outputs", str(job["id"]), "--dest", str(dest), "--overwrite", "--json")
    rows = {r["name"]: r["action"] for r in json.loads(forced.stdout)["items"]}
    assert rows["hls/master.m3u8"] == "written" and master.read_text().startswith("#EXTM3U")


def test_unknown_job_and_unsafe_names(finished: tuple[Path, dict], tmp_path: Path) -> None:
    data, _job = finished
    missing = mediamill(data, "outputs", "JOB-NOPE")
    assert missing.returncode == 1 and "no job 'JOB-NOPE'" in missing.stderr
    for bad in ("../escape.txt", "/etc/passwd", "a/../../b", "a\\b", ""):
        with pytest.raises(InvalidInput):
            destination(tmp_path, bad)
    assert destination(tmp_path, "hls/720p/seg_1.ts") == tmp_path / "hls" / "720p" / "seg_1.ts"

