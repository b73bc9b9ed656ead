"""The README's SDK example runs as written against a real server (its URL and key substituted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.client.conftest import Server, clean_env

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_sdk_example_runs(sqlite_server: Server, small_jpeg: Path, tmp_path: Path) -> None:
    text = README.read_text()
    section = text.split("## From another machine", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example, "the README has no SDK example"
    code = example.group(1)
    assert len(code.strip().splitlines()) <= 7
    code = code.replace('"http://127.0.0.1:8000"', repr(sqlite_server.url)).replace('"mm_…"',
                                                                                 repr(sqlite_server.admin_key))
    (tmp_path / "photo.jpg").write_bytes(small_jpeg.read_bytes())
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                         timeout=300, check=False)
    assert ran.returncode == 0, ran.stderr
    downloaded = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert "thumbnail.jpg" in downloaded or len(downloaded) >= 2, downloaded
    assert "mediamill login https://" in section and "[remote]" in section and "MEDIAMILL_URL" in section
