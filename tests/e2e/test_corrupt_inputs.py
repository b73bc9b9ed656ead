"""Hostile inputs through the engine: refused at submit when the bytes say it is the wrong kind
(or nothing at all), otherwise ``failed`` with ``invalid_input`` — no retry spent, a dead letter,
the input kept — and the same worker goes on to finish the next good job."""

from __future__ import annotations

import pytest

from mediamill.engine import operations as ops
from mediamill.errors import InvalidInput, UnsupportedFormat
from tests.e2e.support import assert_finished_cleanly, sha256_of
from tests.helpers import apply_workflow

BUILTINS = ("WF-VIDEO-TRANSCODE", "WF-IMAGE-PROCESS", "WF-AUDIO-TRANSCODE", "WF-DOC-PROCESS", "WF-VIDEO-ANALYZE")

# corrupt file, workflow, the step that refuses it, a good file of the same family
CORRUPT = [
    ("video_truncated", "WF-VIDEO-TRANSCODE", "Validate Input", "video_hd"),
    ("video_truncated_no_index", "WF-VIDEO-TRANSCODE", "Validate Input", "video_hd"),
    ("video_truncated", "WF-VIDEO-ANALYZE", "Validate Input", "video"),
    ("image_truncated", "WF-IMAGE-PROCESS", "Validate Image", "jpeg"),
    ("png_bomb", "WF-IMAGE-PROCESS", "Validate Image", "jpeg"),
    ("audio_truncated", "WF-AUDIO-TRANSCODE", "Validate Audio", "wav"),
    ("pdf_truncated", "WF-DOC-PROCESS", "Validate Document", "pdf"),
    ("pdf_encrypted", "WF-DOC-PROCESS", "Validate Document", "pdf"),
    ("docx_truncated", "WF-DOC-PROCESS", "Validate Document", "pdf"),
]


def assert_failed_invalid_input(env, detail, input_key: str, input_sha: str, step: str) -> None:
    assert detail["status"] == "failed", detail["status"]
    assert detail["error_class"] == "invalid_input", (detail["error_class"], detail["error_message"])
    message = detail["error_message"]
    assert message.startswith(f"{step}: ") and "Traceback" not in message and len(message) < 500, message
    [execution] = detail["steps"]  # one failed execution: nothing after it ran, nothing was retried
    assert execution["step_name"] == step and execution["status"] == "failed"
    assert execution["error_class"] == "invalid_input"
    assert detail["retry_count"] == 0 and detail["rescue_count"] == 0
    assert not any(e["event_type"] == "retry" for e in detail["events"])
    dead = [d for d in ops.list_dead_letters(env.rt.engine) if d["job_id"] == detail["id"]]
    assert len(dead) == 1 and dead[0]["error_class"] == "invalid_input" and dead[0]["failed_step"] == step
    assert dead[0]["input_key"] == input_key
    assert sha256_of(env.stored(input_key)) == input_sha  # the input is kept, untouched, for a retry


@pytest.mark.parametrize("corrupt, workflow, step, good", CORRUPT)
def test_corrupt_input_fails_cleanly_and_the_worker_goes_on(env, media, corrupt, workflow, step, good):
    path = getattr(media, corrupt)
    job, key = env.submit(path, workflow)
    bad = env.wait(job.id)
    assert_failed_invalid_input(env, bad, key, sha256_of(path), step)
    after = env.run(getattr(media, good), workflow)
    assert_finished_cleanly(env, after, "partial" if good == "docx" else "completed")
    workers = {s["worker_id"] for s in bad["steps"] + after["steps"]}
    assert workers == {env.worker.worker_id}


def test_invalid_input_is_not_retried_by_a_retry_step(env, media):
    """``on_failure: retry`` retries transient failures only: a corrupt file fails on the first try."""
    apply_workflow(env.rt, {
        "code": "WF-E2E-RETRY", "name": "transcode with retries", "type": "video", "input_types": ["video/mp4"],
        "retry_count": 3,
        "steps": [{"name": "Transcode 480p", "action": "transcode_video", "params": {"resolution": "480p"},
                   "on_failure": "retry"}]})
    job, key = env.submit(media.video_truncated, "WF-E2E-RETRY")
    detail = env.wait(job.id)
    assert_failed_invalid_input(env, detail, key, sha256_of(media.video_truncated), "Transcode 480p")
    assert_finished_cleanly(env, env.run(media.video, "WF-E2E-RETRY"))


@pytest.mark.parametrize("workflow", BUILTINS)
def test_zero_byte_file_is_refused_at_submit(env, media, workflow):
    with pytest.raises(InvalidInput, match="empty") as info:
        env.submit(media.empty, workflow)
    assert info.value.error_class == "invalid_input"


@pytest.mark.parametrize("name, detected", [("png_as_mp4", "image/png"), ("text_as_mp4", "text/plain")])
def test_mislabelled_file_is_refused_at_submit(env, media, name, detected):
    with pytest.raises(UnsupportedFormat) as info:
        env.submit(getattr(media, name), "WF-VIDEO-TRANSCODE")
    assert info.value.error_class == "invalid_input"
    assert detected in info.value.message and "WF-VIDEO-TRANSCODE" in info.value.message


def test_a_png_named_mp4_is_processed_as_the_png_it_is(env, media):
    detail = env.run(media.png_as_mp4, "WF-IMAGE-PROCESS")
    assert detail["input_mime"] == "image/png"
    files = assert_finished_cleanly(env, detail)
    assert {"thumbnail_300.png", "image_optimized.png", "image.webp"} <= set(files)
