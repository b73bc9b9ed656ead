"""CLI tables on a narrow terminal: codes and ids are never cut (``WF-VIDE…`` named two workflows),
other columns fold, and no value is read as Rich markup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mediamill.config import Settings
from mediamill.runtime import Runtime

VIDEO_CODES = ("WF-VIDEO-TRANSCODE", "WF-VIDEO-ANALYZE")


def _mm(data: Path, *args: str, columns: int = 60) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")},
           "MEDIAMILL_DATA_DIR": str(data), "COLUMNS": str(columns), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "mediamill.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("tables") / "data"
    rt = Runtime(Settings(data_dir=data))
    rt.prepare()
    rt.close()
    Image.new("RGB", (64, 48), "teal").save(data.parent / "tile.png")
    return data


@pytest.mark.parametrize("columns", [60, 100])
def test_workflow_codes_are_whole_on_a_narrow_terminal(data: Path, columns: int) -> None:
    shown = _mm(data, "workflows", "list", columns=columns).stdout
    for code in VIDEO_CODES:
        assert code in shown, shown
    assert "…" not in shown


def test_job_codes_and_queue_names_are_whole(data: Path) -> None:
    wide = _mm(data, "submit", str(data.parent / "tile.png"), "-w", "WF-IMAGE-PROCESS", "--json", columns=200)
    job_code = wide.stdout.split('"job_code": "')[1].split('"')[0]
    jobs = _mm(data, "jobs").stdout
    assert job_code in jobs and "WF-IMAGE-PROCESS" in jobs and "…" not in jobs, jobs
    queues = _mm(data, "queues").stdout
    assert "document_processing" in queues and "…" not in queues, queues


def test_values_are_not_rich_markup(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mediamill.cli import output

    monkeypatch.setattr(output, "console", output.Console(width=60, no_color=True))
    output.print_table([{"job_code": "JOB-20261129-0123456789AB", "error_message": "[failed] step [bold]x"}],
                       ["job_code", "error_message"])
    shown = capsys.readouterr().out
    assert "JOB-20261129-0123456789AB" in shown and "[failed]" in shown and "[bold]" in shown, shown
