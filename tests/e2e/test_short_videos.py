"""Short and low-frame-rate videos through WF-VIDEO-ANALYZE: the contact sheet's evenly spaced
sample times run to the container's end, past the start of the last frame; they are clamped to
the last frame so every tile has a picture and the job completes."""

from __future__ import annotations

import json

import pytest

from mediamill.media import video as vid
from mediamill.media.probe import last_frame_time
from tests.e2e.support import assert_finished_cleanly, assert_one_execution_per_step, image_info


@pytest.mark.parametrize("clip, last, has_audio", [("short_clip", 0.9, True), ("slideshow", 9.0, False)])
def test_video_analyze_completes_on_short_and_slow_videos(env, media, clip, last, has_audio):
    path = getattr(media, clip)
    assert last_frame_time(path) == pytest.approx(last, abs=0.01)
    detail = env.run(path, "WF-VIDEO-ANALYZE")
    files = assert_finished_cleanly(env, detail)
    expected = {} if has_audio else {"Transcribe Audio": "skipped"}
    assert_one_execution_per_step(env, detail, expected)
    sheet = next(s for s in detail["steps"] if s["step_name"] == "Contact Sheet")
    assert sheet["status"] == "completed" and sheet["error_message"] is None
    fmt, width, height = image_info(files["contact_sheet.jpg"])
    assert fmt == "jpeg" and width > 320 and height > 0
    report = json.loads(files["report.json"].read_text())
    assert report["metadata"]["has_audio"] is has_audio


def test_sample_times_after_the_last_frame_are_clamped_to_it():
    times = vid.frame_times(1.0, 12)
    assert times[-1] == pytest.approx(0.958)  # after the last frame of a 10 fps second
    clamped = vid.clamp_times(times, 0.9)
    assert max(clamped) == 0.9 and clamped[:9] == times[:9]
    # floored, never rounded up past the frame: ffmpeg keeps frames at or after the seek time
    assert vid.clamp_times([5.0], 2 / 3) == [0.666]
    assert vid.clamp_times(times, None) == times
