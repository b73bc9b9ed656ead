"""`mediamill actions`: every registered action — plug-ins found through their entry point too —
with its parameter schema, error classes and isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mediamill.actions.base import load_actions

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_action"


def _installed_plugin(site: Path) -> str:
    """The example plug-in as pip would leave it: its package plus a dist-info with the entry point."""
    dist = site / "mediamill_watermark-0.1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mediamill-watermark\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[mediamill.actions]\nwatermark = mediamill_watermark.actions\n")
    return os.pathsep.join([str(site), str(EXAMPLE / "src")])


def _actions(tmp_path: Path, *args: str, columns: str = "200") -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([_installed_plugin(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": columns, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "mediamill.cli.main", "actions", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    done = _actions(tmp_path_factory.mktemp("actions"), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert list(doc) == ["items"]
    return {a["name"]: a for a in doc["items"]}


def test_every_builtin_and_the_plugin_are_listed(listing: dict[str, dict]) -> None:
    assert set(load_actions()) <= set(listing)
    plugin = listing["add_watermark"]
    assert plugin["family"] == "image"
    assert plugin["plugin"] == {"package": "mediamill-watermark",
                                "entry_point": "watermark = mediamill_watermark.actions"}
    assert listing["resize_image"]["plugin"] is None
    for item in listing.values():
        assert {"name", "family", "params_schema", "params", "errors", "isolated", "idempotent"} <= set(item)
        assert item["params_schema"]["type"] == "object"


def test_parameter_schema_has_names_types_defaults_and_allowed_values(listing: dict[str, dict]) -> None:
    resize = listing["resize_image"]
    props = resize["params_schema"]["properties"]
    assert props["max_dimension"]["type"] == "integer" and props["max_dimension"]["default"] == 2000
    assert props["format"]["enum"] == ["auto", "jpeg", "png", "webp", "avif"]
    assert resize["params_schema"]["additionalProperties"] is False
    rows = {p["name"]: p for p in resize["params"]}
    assert rows["max_dimension"] == {"name": "max_dimension", "type": "integer", "required": False, "default": 2000,
                                     "allowed": None, "bounds": "≥ 1, ≤ 30000",
                                     "description": "longest side, px (never upscales)"}
    assert rows["quality"]["type"] == "integer | null"
    fail = {p["name"]: p for p in listing["fail"]["params"]}
    assert "resource" in fail["error_class"]["allowed"]  # allowed values a validator enforces are shown too
    assert listing["fail"]["errors"] and listing["noop"]["isolated"] is False
    assert listing["transcode_video"]["fuse"] == "video_ladder"
    assert {p["name"]: p["required"] for p in listing["http_request"]["params"]}["url"] is True


def test_table_and_single_action_on_a_narrow_terminal(tmp_path: Path) -> None:
    table = _actions(tmp_path, columns="60")
    assert table.returncode == 0, table.stderr
    for name in ("extract_audio_metadata", "add_watermark", "transcode_video"):
        assert name in table.stdout, table.stdout  # names are never folded or cut
    one = _actions(tmp_path, "resize_image", columns="60")
    assert one.returncode == 0 and "max_dimension" in one.stdout and "30000" in one.stdout, one.stdout
    missing = _actions(tmp_path, "resize_imag")
    assert missing.returncode == 1 and "did you mean 'resize_image'?" in " ".join(missing.stderr.split())
