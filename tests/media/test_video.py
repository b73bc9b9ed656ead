"""Video actions on generated clips, checked with a prober."""

from __future__ import annotations

import json
import time

import pytest

from mediamill.actions.base import get_fuser
from mediamill.config import MediaLimits
from mediamill.errors import CorruptMedia, InvalidInput, SourceTooLarge, UnsupportedFormat

from .conftest import make_ctx, run_action
from .probers import mp4_faststart, probe_image, probe_video


def test_validate_video_reports_facts(media, tmp_path):
    result = run_action("validate_video", media.video, tmp_path)
    d = result.data
    assert (d["width"], d["height"], d["codec"], d["has_audio"]) == (320, 180, "h264", True)
    assert d["duration"] == pytest.approx(3.0, abs=0.1)


def test_validate_video_rotated_reports_display_size(media, tmp_path):
    d = run_action("validate_video", media.video_rotated, tmp_path).data
    assert (d["width"], d["height"], d["rotation"]) == (180, 320, 90)


@pytest.mark.parametrize("name, error", [
    ("video_truncated", CorruptMedia), ("video_truncated_no_index", CorruptMedia), ("empty", CorruptMedia),
    ("text_as_mp4", UnsupportedFormat), ("jpeg_as_mp4", UnsupportedFormat), ("random_bytes", UnsupportedFormat),
    ("wav", UnsupportedFormat),
])
def test_validate_video_refuses_bad_input_quickly(media, tmp_path, name, error):
    start = time.monotonic()
    with pytest.raises(error) as info:
        run_action("validate_video", getattr(media, name), tmp_path)
    assert isinstance(info.value, InvalidInput)
    assert info.value.message and str(media.root) not in info.value.message  # no paths leak
    assert time.monotonic() - start < 5


def test_validate_video_limits(media, tmp_path):
    with pytest.raises(SourceTooLarge):
        run_action("validate_video", media.video, tmp_path, limits=MediaLimits(max_video_duration_s=1))
    with pytest.raises(SourceTooLarge):
        run_action("validate_video", media.video, tmp_path, limits=MediaLimits(max_video_pixels=320 * 100))


def test_extract_video_metadata(media, tmp_path):
    d = run_action("extract_video_metadata", media.video, tmp_path).data
    assert d["fps"] == 25 and d["audio_codec"] == "aac" and d["channels"] == 2
    assert run_action("extract_video_metadata", media.video_noaudio, tmp_path).data["has_audio"] is False


def test_transcode_720p_never_upscales_and_is_faststart(media, tmp_path):
    result = run_action("transcode_video", media.video, tmp_path, {"resolution": "720p"})
    [out] = result.outputs
    assert out.name == "video_720p.mp4" and out.mime_type == "video/mp4"
    p = probe_video(out.path)
    assert (p["width"], p["height"], p["codec"], p["audio_codec"]) == (320, 180, "h264", "aac")
    assert p["duration"] == pytest.approx(3.0, abs=0.1)
    assert mp4_faststart(out.path)
    assert out.metadata["width"] == 320


def test_transcode_honours_rotation(media, tmp_path):
    [out] = run_action("transcode_video", media.video_rotated, tmp_path, {"resolution": "240p"}).outputs
    p = probe_video(out.path)
    assert (p["width"], p["height"], p["rotation"]) == (180, 320, 0)


def test_transcode_odd_size_gives_even_dimensions(media, tmp_path):
    [out] = run_action("transcode_video", media.video_odd, tmp_path, {"resolution": "source"}).outputs
    p = probe_video(out.path)
    assert p["width"] % 2 == 0 and p["height"] % 2 == 0
    assert p["width"] <= 333 and p["height"] <= 187 and p["pix_fmt"] == "yuv420p"
    assert "audio_codec" not in p


def test_transcode_vfr_keeps_duration(media, tmp_path):
    [out] = run_action("transcode_video", media.video_vfr, tmp_path, {"height": 144}).outputs
    p = probe_video(out.path)
    assert p["height"] == 144 and p["duration"] == pytest.approx(3.0, abs=0.15)


def test_transcode_vp9_goes_to_webm(media, tmp_path):
    [out] = run_action("transcode_video", media.video_hd, tmp_path,
                       {"resolution": "144p", "codec": "vp9", "preset": "ultrafast"}).outputs
    assert out.name == "video_144p_vp9.webm" and out.mime_type == "video/webm"
    p = probe_video(out.path)
    assert (p["codec"], p["height"], p["audio_codec"]) == ("vp9", 144, "opus")


def test_transcode_params_are_validated():
    from mediamill.actions.base import get_action, params_error
    spec = get_action("transcode_video")
    assert params_error(spec, {"resolution": "huge"})
    assert params_error(spec, {"codec": "h264", "container": "webm"})
    assert params_error(spec, {"bogus": 1})
    assert not params_error(spec, {"resolution": "1080p", "crf": 20, "preset": "fast"})


def test_fused_ladder_matches_separate_runs(media, tmp_path):
    ladder = ["360p", "240p", "144p"]
    separate = [run_action("transcode_video", media.video_hd, tmp_path / f"s{r}", {"resolution": r}).outputs[0]
                for r in ladder]
    progress: dict[str, list[float]] = {r: [] for r in ladder}
    ctxs = [make_ctx("transcode_video", media.video_hd, tmp_path / f"f{r}", {"resolution": r},
                     progress=progress[r].append) for r in ladder]
    fused = get_fuser("video_ladder")(ctxs)
    assert len(fused) == 3
    for one, res in zip(separate, fused, strict=True):
        [many] = res.outputs
        assert one.name == many.name
        a, b = probe_video(one.path), probe_video(many.path)
        for key in ("width", "height", "codec", "audio_codec"):
            assert a[key] == b[key]
        assert a["duration"] == pytest.approx(b["duration"], abs=0.1)
        assert mp4_faststart(many.path)
    assert [probe_video(r.outputs[0].path)["height"] for r in fused] == [360, 240, 144]
    assert all(p and p[-1] == 100.0 for p in progress.values())


def test_generate_thumbnails(media, tmp_path):
    result = run_action("generate_thumbnails", media.video, tmp_path, {"count": 5, "width": 160})
    assert [o.name for o in result.outputs] == [f"thumb_0{i}.jpg" for i in range(1, 6)]
    times = [o.metadata["time"] for o in result.outputs]
    assert times == sorted(times) and times[0] > 0 and times[-1] < 3.0
    for o in result.outputs:
        assert probe_image(o.path)[:3] == ("jpeg", 160, 90)


def test_thumbnails_with_contact_sheet_rotated_webp(media, tmp_path):
    result = run_action("generate_thumbnails", media.video_rotated, tmp_path,
                        {"count": 4, "width": 90, "format": "webp", "contact_sheet": True, "columns": 2})
    fmt, w, h, _ = probe_image(result.outputs[0].path)
    assert (fmt, w, h) == ("webp", 90, 160)
    assert result.outputs[-1].name == "contact_sheet.webp"


def test_thumbnails_refuse_audio_only(media, tmp_path):
    with pytest.raises(InvalidInput):
        run_action("generate_thumbnails", media.m4a, tmp_path)


def test_contact_sheet(media, tmp_path):
    result = run_action("contact_sheet", media.video, tmp_path, {"count": 6, "columns": 3, "tile_width": 100})
    [out] = result.outputs
    fmt, w, h, _ = probe_image(out.path)
    assert fmt == "jpeg" and w == 3 * 100 + 4 * 4 and h == 2 * 56 + 3 * 4
    assert list(tmp_path.glob("sheet_tile*")) == []


def test_detect_scenes(media, tmp_path):
    result = run_action("detect_scenes", media.video_scenes, tmp_path)
    scenes = result.data["scenes"]
    assert [round(s["start"]) for s in scenes] == [0, 2, 4]
    assert scenes[-1]["end"] == pytest.approx(6.0, abs=0.1)
    assert json.loads(result.outputs[0].path.read_text())["scenes"] == scenes


def test_package_hls(media, tmp_path):
    result = run_action("package_hls", media.video_hd, tmp_path,
                        {"ladder": ["360p", "240p", "1080p"], "segment_seconds": 1, "preset": "ultrafast"})
    names = {o.name for o in result.outputs}
    assert "hls/master.m3u8" in names and "hls/240p/index.m3u8" in names
    assert result.data["variants"] == ["360p", "240p"]  # 1080p would upscale: same as 360p, dropped
    master = (tmp_path / "hls" / "master.m3u8").read_text()
    assert "RESOLUTION=640x360" in master and "RESOLUTION=426x240" in master
    segment = next(o for o in result.outputs if o.name.endswith(".ts"))
    p = probe_video(segment.path)
    assert p["codec"] == "h264" and p["audio_codec"] == "aac"


def test_transcode_timeout_kills_ffmpeg(media, tmp_path):
    from mediamill.errors import StepTimeout
    with pytest.raises(StepTimeout):
        run_action("transcode_video", media.video_hd, tmp_path, {"resolution": "360p", "codec": "av1",
                                                                  "preset": "veryslow"}, timeout=0.3)


def test_identical_rungs_are_encoded_once(media, tmp_path):
    # a 320×180 source: 1080p and 720p both stay 320×180, so one encode serves both steps
    ctxs = [make_ctx("transcode_video", media.video, tmp_path / r, {"resolution": r}) for r in ("1080p", "720p")]
    a, b = get_fuser("video_ladder")(ctxs)
    assert (a.outputs[0].name, b.outputs[0].name) == ("video_1080p.mp4", "video_720p.mp4")
    assert a.outputs[0].path.read_bytes() == b.outputs[0].path.read_bytes()
    assert probe_video(b.outputs[0].path)["height"] == 180


def test_anamorphic_source_gets_square_pixels(media, tmp_path):
    d = run_action("extract_video_metadata", media.video_anamorphic, tmp_path).data
    assert (d["width"], d["height"]) == (427, 180)
    [out] = run_action("transcode_video", media.video_anamorphic, tmp_path, {"resolution": "source"}).outputs
    p = probe_video(out.path)
    assert (p["width"], p["height"]) == (426, 180)


def test_interlaced_source_is_deinterlaced(media, tmp_path):
    d = run_action("validate_video", media.video_interlaced, tmp_path).data
    assert d["interlaced"] is True
    [out] = run_action("transcode_video", media.video_interlaced, tmp_path, {"resolution": "source"}).outputs
    assert run_action("extract_video_metadata", out.path, tmp_path / "o").data["interlaced"] is False


def test_input_size_limit(media, tmp_path):
    with pytest.raises(SourceTooLarge, match="bytes"):
        run_action("validate_video", media.video, tmp_path, limits=MediaLimits(max_input_bytes=1000))


@pytest.mark.parametrize("action", ["validate_video", "transcode_video", "extract_video_metadata",
                                    "detect_scenes", "package_hls"])
def test_audio_only_input_is_refused_by_video_steps(media, tmp_path, action):
    with pytest.raises(UnsupportedFormat):
        run_action(action, media.m4a, tmp_path)
