"""The documented custom-action example registers through the ``mediamill.actions`` entry point."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

from mediamill.actions.base import get_action

from .conftest import run_action
from .probers import probe_image

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_action"


def test_example_declares_the_entry_point():
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["mediamill.actions"]["watermark"]
    assert target == "mediamill_watermark.actions"


def test_example_action_registers_and_chains(media, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    sys.modules.pop("mediamill_watermark.actions", None)
    importlib.import_module("mediamill_watermark.actions")  # what the entry point loads
    spec = get_action("add_watermark")
    assert spec is not None and spec.family == "image"
    result = run_action("add_watermark", media.jpeg, tmp_path, {"text": "hello", "corner": "top-left"})
    assert result.data["chainable"] is True
    assert probe_image(result.outputs[0].path)[:3] == ("png", 640, 360)
