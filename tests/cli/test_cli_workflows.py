"""`mediamill workflows …` and `db upgrade` as a user types them (real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE = """code: WF-CLI
name: CLI pipeline
type: generic
queue: cli
steps:
  - name: First
    action: noop
  - name: Nap
    action: sleep
    params: {seconds: 0.1}
"""


def mm(data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data), "MEDIAMILL_DATABASE_URL": "", "NO_COLOR": "1",
           "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "mediamill.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"mediamill {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def data(tmp_path: Path) -> Path:
    mm(tmp_path / "data", "db", "upgrade")
    return tmp_path / "data"


def test_apply_version_diff_activate(data: Path, tmp_path: Path) -> None:
    f = tmp_path / "wf.yaml"
    f.write_text(BASE)
    first = json.loads(mm(data, "workflows", "apply", "-f", str(f), "--json").stdout)
    again = json.loads(mm(data, "workflows", "apply", "-f", str(f), "--json").stdout)
    assert (first[0]["version"], first[0]["created"], again[0]["version"], again[0]["created"]) == (1, True, 1, False)
    f.write_text(BASE.replace("seconds: 0.1", "seconds: 0.2"))
    second = json.loads(mm(data, "workflows", "apply", "-f", str(f), "--json").stdout)
    assert second[0]["version"] == 2
    diff = json.loads(mm(data, "workflows", "diff", "WF-CLI", "1", "2", "--json").stdout)
    assert diff["steps_changed"] == ["Nap"]
    assert "Nap" in mm(data, "workflows", "diff", "WF-CLI", "1", "2").stdout
    mm(data, "workflows", "activate", "WF-CLI", "1")
    shown = json.loads(mm(data, "workflows", "show", "WF-CLI", "--json").stdout)
    assert shown["version"] == 1 and shown["definition"]["steps"][1]["params"] == {"seconds": 0.1}
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    v2 = json.loads(mm(data, "workflows", "show", "WF-CLI", "--version", "2", "--json").stdout)
    assert v2["definition"]["steps"][1]["params"] == {"seconds": 0.2}
    listing = json.loads(mm(data, "workflows", "list", "--json").stdout)
    assert [(w["workflow_code"], w["current_version"], w["versions"]) for w in listing] == [("WF-CLI", 1, 2)]


def test_bad_files_give_located_errors_and_no_traceback(data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "wfs"
    folder.mkdir()
    (folder / "a.yaml").write_text(BASE.replace("action: noop", "action: nope"))
    (folder / "b.yaml").write_text(BASE.replace("name: Nap", "name: First"))
    (folder / "c.yaml").write_text("code: [oops\n")
    for cmd in ("validate", "apply"):
        proc = mm(data, "workflows", cmd, "-f", str(folder), check=False)
        assert proc.returncode == 2
        err = proc.stderr
        assert "Traceback" not in err and "Traceback" not in proc.stdout
        assert "a.yaml: steps[0].action: unknown action 'nope'" in err
        assert "b.yaml: steps[1].name: duplicate step name 'First'" in err
        assert "c.yaml: line 2, column 1: invalid YAML" in err
    listing = json.loads(mm(data, "workflows", "list", "--json").stdout)
    assert listing == []  # nothing half-applied


def test_unknown_workflow_and_bad_config_are_clear(data: Path) -> None:
    proc = mm(data, "workflows", "show", "WF-NOPE", check=False)
    assert proc.returncode == 1 and "no workflow 'WF-NOPE'" in proc.stderr and "Traceback" not in proc.stderr
    env = {**os.environ, "MEDIAMILL_DATA_DIR": str(data), "MEDIAMILL_LEASE_SECONDS": "0"}
    bad = subprocess.run([sys.executable, "-m", "mediamill.cli.main", "workflows", "list"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "MEDIAMILL_LEASE_SECONDS: Value error, must be positive, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_doctor_reports_ffmpeg_from_the_wheel(data: Path) -> None:
    report = json.loads(mm(data, "doctor", "--json").stdout)
    assert report["ffmpeg"]["available"] and report["ffmpeg"]["version"].startswith("ffmpeg version")
    assert report["libvips"]["available"] and report["pdfium"]["available"]
    assert "ffmpeg" in mm(data, "doctor").stdout
