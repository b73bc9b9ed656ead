"""The shadow report's differences that mean something, per kind of media (real files, real probes)."""

from __future__ import annotations

from pathlib import Path

from mediamill.media.compare import compare_outputs

from .conftest import Media


def test_video_differences_are_duration_resolution_and_bitrate(media: Media) -> None:
    same = compare_outputs(media.video, media.video, "video/mp4", "video/mp4")
    assert same["kind"] == "av" and same["same_resolution"] and same["duration_delta"] == 0
    assert same["bitrate_ratio"] == 1.0
    assert (same["primary"]["width"], same["primary"]["height"]) == (320, 180)
    other = compare_outputs(media.video, media.video_hd, "video/mp4", "video/mp4")
    assert not other["same_resolution"] and (other["candidate"]["width"], other["candidate"]["height"]) == (640, 360)
    assert other["duration_delta"] < -0.5  # the candidate is 2 s against 3 s
    assert other["bitrate_ratio"] > 0


def test_audio_differences_carry_codec_and_duration(media: Media) -> None:
    out = compare_outputs(media.wav, media.mp3, "audio/wav", "audio/mpeg")
    assert out["kind"] == "av" and out["primary"]["codec"] != out["candidate"]["codec"]
    assert abs(out["duration_delta"]) < 0.2  # the same 2.5 s tone, re-encoded
    assert out["primary"]["sample_rate"] == 44100


def test_text_similarity(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_text("The quick brown fox jumps over the lazy dog.\n" * 5)
    b.write_text("The quick brown fox jumps over the lazy cat.\n" * 5)
    c.write_text("Something else entirely.\n")
    assert compare_outputs(a, a, "text/plain", "text/plain")["similarity"] == 1.0
    near = compare_outputs(a, b, "text/plain", "text/plain")["similarity"]
    far = compare_outputs(a, c, "text/plain", "text/plain")["similarity"]
    assert 0.9 < near < 1.0 and far < 0.5


def test_an_unreadable_output_is_reported_not_raised(media: Media, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    out = compare_outputs(media.video, broken, "video/mp4", "video/mp4")
    assert out["kind"] == "error" and out["error"]
    assert compare_outputs(broken, broken, "application/octet-stream", None) == {"kind": "bytes", "identical": True}
