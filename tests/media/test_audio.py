"""Audio actions: validation, metadata and loudness, fused transcodes, waveform peaks."""

from __future__ import annotations

import json
import math
import time

import pytest
from PIL import Image

from mediamill.actions.base import get_fuser
from mediamill.errors import CorruptMedia, InvalidInput, SourceTooLarge, UnsupportedFormat

from .conftest import make_ctx, run_action
from .probers import probe_video


@pytest.mark.parametrize("name", ["wav", "mp3", "m4a", "video"])
def test_validate_audio_accepts(media, tmp_path, name):
    d = run_action("validate_audio", getattr(media, name), tmp_path).data
    assert d["valid"] and d["duration"] > 2


@pytest.mark.parametrize("name, error", [
    ("audio_truncated", CorruptMedia), ("empty", CorruptMedia), ("text_as_mp4", UnsupportedFormat),
    ("video_noaudio", UnsupportedFormat), ("jpeg", UnsupportedFormat),
])
def test_validate_audio_refuses(media, tmp_path, name, error):
    start = time.monotonic()
    with pytest.raises(error) as info:
        run_action("validate_audio", getattr(media, name), tmp_path)
    assert isinstance(info.value, InvalidInput)
    assert time.monotonic() - start < 5


def test_validate_audio_duration_limit(media, tmp_path):
    with pytest.raises(SourceTooLarge):
        run_action("validate_audio", media.wav, tmp_path, {"max_duration_s": 1})


def test_extract_audio_metadata_with_loudness(media, tmp_path):
    d = run_action("extract_audio_metadata", media.wav, tmp_path).data
    assert (d["sample_rate"], d["channels"], d["codec"]) == (44100, 1, "pcm_s16le")
    assert d["duration"] == pytest.approx(2.5, abs=0.05)
    assert d["loudness"]["integrated_lufs"] is not None and d["loudness"]["integrated_lufs"] < 0


@pytest.mark.parametrize("fmt, name, codec", [("mp3", "audio.mp3", "mp3"), ("aac", "audio.m4a", "aac"),
                                              ("opus", "audio.opus", "opus")])
def test_transcode_audio(media, tmp_path, fmt, name, codec):
    [out] = run_action("transcode_audio", media.wav, tmp_path, {"format": fmt, "bitrate": "96k"}).outputs
    assert out.name == name
    p = probe_video(out.path)
    assert p["audio_codec"] == codec and p["duration"] == pytest.approx(2.5, abs=0.1)


def test_transcode_audio_from_video(media, tmp_path):
    [out] = run_action("transcode_audio", media.video, tmp_path, {"format": "aac"}).outputs
    p = probe_video(out.path)
    assert "codec" not in p and p["audio_codec"] == "aac"


def test_fused_audio_transcodes(media, tmp_path):
    ctxs = [make_ctx("transcode_audio", media.mp3, tmp_path / f, {"format": f}) for f in ("mp3", "aac")]
    results = get_fuser("audio_transcode")(ctxs)
    assert [r.outputs[0].name for r in results] == ["audio.mp3", "audio.m4a"]
    assert [probe_video(r.outputs[0].path)["audio_codec"] for r in results] == ["mp3", "aac"]


def test_waveform_json_is_audiowaveform_v2(media, tmp_path):
    result = run_action("generate_waveform", media.wav, tmp_path, {"samples_per_pixel": 512})
    doc = json.loads(result.outputs[0].path.read_text())
    assert doc["version"] == 2 and doc["channels"] == 1 and doc["bits"] == 8
    assert doc["sample_rate"] == 44100 and doc["samples_per_pixel"] == 512
    assert doc["length"] == math.ceil(44100 * 2.5 / 512) == len(doc["data"]) // 2
    assert all(-128 <= v <= 127 for v in doc["data"])
    assert max(doc["data"][1::2]) > 10 and min(doc["data"][0::2]) < -10  # a sine swings both ways
    with Image.open(result.outputs[1].path) as im:
        assert im.format == "PNG" and im.size == (1800, 280)


def test_waveform_caps_length(media, tmp_path):
    result = run_action("generate_waveform", media.wav, tmp_path, {"samples_per_pixel": 16, "max_length": 100})
    assert result.data["length"] <= 100 and result.data["samples_per_pixel"] > 16


def test_waveform_of_truncated_audio_fails_cleanly(media, tmp_path):
    with pytest.raises(InvalidInput):
        run_action("generate_waveform", media.empty, tmp_path)
