"""Chunked encoding on real media: plan at keyframes, encode segments apart, join without re-encoding,
and get the same rendition as the single-process encode (frames, duration, no seam)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediamill.actions import chunked as ops
from mediamill.media import chunked as ch
from tests.chunked_media import make_gop_clip, rendition_facts
from tests.media.conftest import run_action

LADDER = [{"resolution": "180p"}, {"resolution": "144p", "crf": 30}]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s 320×180 at 25 fps, a keyframe every second, with audio."""
    return make_gop_clip(tmp_path_factory.mktemp("chunked") / "gop.mp4")


def test_frame_index_reads_every_frame_and_the_keyframes(clip: Path) -> None:
    index = ch.frame_index(clip)
    assert index.frames == 300
    assert [round(index.times[k], 3) for k in index.keyframes] == [float(s) for s in range(12)]


def test_plan_cuts_at_the_keyframes_nearest_equal_slices(clip: Path) -> None:
    segments = ch.plan_segments(ch.frame_index(clip), 4)
    assert [round(s.start, 3) for s in segments] == [0.0, 3.0, 6.0, 9.0]
    assert [s.frames for s in segments] == [75, 75, 75, 75]
    assert [s.first_frame for s in segments] == [0, 75, 150, 225]
    assert round(segments[-1].end, 3) == 12.0
    # 5 parts of 2.4 s: the cuts move to the nearest keyframe (2, 5, 7, 10 s) and every frame is kept
    five = ch.plan_segments(ch.frame_index(clip), 5)
    assert [round(s.start) for s in five] == [0, 2, 5, 7, 10] and sum(s.frames for s in five) == 300


def test_segment_count_for_auto_and_numbers() -> None:
    assert ch.segment_count("auto", 60.0) == 6
    assert ch.segment_count("auto", 12.0) == 2
    assert ch.segment_count(4, 12.0) == 4
    assert ch.segment_count(8, 5.0) == 2  # never segments shorter than MIN_SEGMENT_SECONDS
    assert ch.segment_count("auto", 3.0) == 1


def test_short_input_is_not_split(clip: Path, tmp_path: Path) -> None:
    short = make_gop_clip(tmp_path / "short.mp4", seconds=3)
    planned = ops.plan({"source": str(short), "params": LADDER, "parallel": "auto"})
    assert planned["segments"] == [] and "3.0 s" in planned["reason"]


def _chunked(clip: Path, tmp_path: Path, parts: int) -> list[dict[str, object]]:
    planned = ops.plan({"source": str(clip), "params": LADDER, "parallel": parts})
    assert len(planned["segments"]) == parts and planned["frames"] == 300
    files = [ops.segment({"source": str(clip), "params": LADDER, "segment": seg,
                          "work_dir": str(tmp_path / f"seg{n}")}, lambda _p: None)["files"]
             for n, seg in enumerate(planned["segments"])]
    audio = ops.audio({"source": str(clip), "params": LADDER, "work_dir": str(tmp_path / "audio")})["files"]
    assert len(audio) == 1  # both rungs share the audio setting: encoded once
    joined = ops.join({"source": str(clip), "params": LADDER, "parts": files, "audio": audio,
                       "work_dir": str(tmp_path / "join"),
                       "step_dirs": [str(tmp_path / f"step{i}") for i in range(len(LADDER))]}, lambda _p: None)
    return list(joined["results"])


def test_joined_renditions_match_the_single_process_encode(clip: Path, tmp_path: Path) -> None:
    results = _chunked(clip, tmp_path, 4)
    for params, result in zip(LADDER, results, strict=True):
        single = run_action("transcode_video", clip, tmp_path / f"single-{params['resolution']}", params)
        (ref,) = single.outputs
        (out,) = result["outputs"]
        assert out["name"] == ref.name and out["mime_type"] == ref.mime_type
        a, b = rendition_facts(ref.path), rendition_facts(Path(out["path"]))
        assert (b.width, b.height) == (a.width, a.height)
        assert b.frames == a.frames == 300
        assert abs(b.duration - a.duration) <= a.frame_step
        assert b.audio_duration is not None and a.audio_duration is not None
        assert abs(b.audio_duration - a.audio_duration) <= 0.05
        # no seam: a keyframe opens every segment, timestamps strictly increase and stay evenly spaced
        assert {3.0, 6.0, 9.0} <= set(b.keyframes) and b.keyframes[0] == 0.0
        assert b.pts_monotonic and b.dts_monotonic and b.even_spacing
        assert result["data"]["segments"] == 4
        assert {k: v for k, v in result["data"].items() if k not in ("segments", "renditions_joined", "bitrate")} \
            == {k: v for k, v in single.data.items() if k != "bitrate"}


def test_frame_rate_change_is_not_split(clip: Path) -> None:
    planned = ops.plan({"source": str(clip), "params": [{"max_fps": 10}], "parallel": 4})
    assert planned["segments"] == [] and "max_fps" in planned["reason"]
