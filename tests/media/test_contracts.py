"""Contracts with the rest of mediamill: built-in workflows' params, registry facts, sniffing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mediamill.actions.base import get_action, get_fuser, load_actions, params_error
from mediamill.media.sniff import sniff_file

BUILTIN = Path(__file__).resolve().parents[2] / "src" / "mediamill" / "workflows" / "builtin"
MEDIA_ACTIONS = {
    "validate_video", "extract_video_metadata", "transcode_video", "generate_thumbnails", "contact_sheet",
    "detect_scenes", "package_hls", "validate_image", "resize_image", "create_thumbnail", "optimize_image",
    "convert_format", "validate_audio", "extract_audio_metadata", "transcode_audio", "generate_waveform",
    "validate_document", "extract_text", "render_thumbnail", "convert_document", "transcribe_audio",
    "build_report", "finalize_job", "http_request",
}


def _builtin_steps():
    for path in sorted(BUILTIN.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for step in doc["steps"]:
            yield doc["code"], step


@pytest.mark.parametrize("code, step", list(_builtin_steps()), ids=lambda v: v if isinstance(v, str) else v["name"])
def test_builtin_workflow_params_validate(code, step):
    spec = get_action(step["action"])
    assert spec is not None, f"{code}: no action {step['action']}"
    assert params_error(spec, step.get("params")) == []


def test_every_media_action_is_registered_with_a_description():
    actions = load_actions()
    for name in MEDIA_ACTIONS:
        spec = actions[name]
        assert spec.description, name
        assert params_error(spec, {"surely_not_a_param": 1}), f"{name} must forbid unknown params"


@pytest.mark.parametrize("key", ["video_ladder", "image", "audio_transcode"])
def test_fusers_registered(key):
    assert get_fuser(key) is not None


@pytest.mark.parametrize("name, mime", [
    ("video", "video/mp4"), ("video_vfr", "video/x-matroska"), ("wav", "audio/wav"), ("mp3", "audio/mpeg"),
    ("jpeg", "image/jpeg"), ("png_alpha", "image/png"), ("gif_animated", "image/gif"), ("pdf", "application/pdf"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("docx_truncated", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("text_as_mp4", "text/plain"), ("jpeg_as_mp4", "image/jpeg"), ("empty", "application/x-empty"),
])
def test_sniff_by_content(media, name, mime):
    assert sniff_file(getattr(media, name)) == mime
