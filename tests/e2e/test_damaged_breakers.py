"""Damaged uploads never open a circuit breaker, family by family, through a real worker.

Seven damaged files of a family go through its built-in workflow, then through a workflow that
runs every action reading that family's input (each ``on_failure: continue``, so damage that
slips past validation reaches them all). Every failure must be ``invalid_input`` — not retried,
not counted by a breaker — so every breaker stays closed and a good file right after completes
at once, without waiting on a breaker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mediamill.engine import operations as ops
from mediamill.errors import BREAKER_CLASSES
from tests.e2e.support import FINAL, assert_finished_cleanly
from tests.helpers import apply_workflow
from tests.media import damage as D

#: a file cut short at five points (an interrupted upload)
CUT_SHORT = tuple(D.truncated(f) for f in (0.1, 0.3, 0.5, 0.7, 0.9))
#: family → (workflow, sample, MIME, seven damages, the actions that read the input with their params)
FAMILIES: dict[str, tuple[str, str, str, tuple[D.Damage, ...], list[tuple[str, dict[str, Any]]]]] = {
    "pdf": ("WF-DOC-PROCESS", "pdf", "application/pdf", D.PDF_PAGES,
            [("validate_document", {}), ("extract_text", {}), ("render_thumbnail", {}),
             ("convert_document", {"format": "text"})]),
    "docx": ("WF-DOC-PROCESS", "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
             (D.truncated(0.1), D.truncated(0.5), D.truncated(0.9), D.zeroed(0.05, 0.3), D.zeroed(0.4, 0.2),
              *D.DOCX[-2:]),
             [("validate_document", {}), ("extract_text", {}), ("convert_document", {"format": "text"})]),
    "image": ("WF-IMAGE-PROCESS", "jpeg", "image/jpeg", D.IMAGE[:3] + D.IMAGE[4:],
              [("validate_image", {}), ("resize_image", {"max_dimension": 200}),
               ("create_thumbnail", {"size": 96}), ("optimize_image", {}), ("convert_format", {"format": "webp"})]),
    "video": ("WF-VIDEO-TRANSCODE", "video", "video/mp4", CUT_SHORT + D.VIDEO[-2:],
              [("validate_video", {}), ("extract_video_metadata", {}), ("transcode_video", {"resolution": "240p"}),
               ("generate_thumbnails", {"count": 3}), ("contact_sheet", {"count": 4}), ("detect_scenes", {}),
               ("package_hls", {"ladder": ["240p"]})]),
    "audio": ("WF-AUDIO-TRANSCODE", "m4a_plain", "audio/mp4", CUT_SHORT + D.AUDIO[-2:],
              [("validate_audio", {}), ("extract_audio_metadata", {}), ("transcode_audio", {"format": "mp3"}),
               ("generate_waveform", {}), ("transcribe_audio", {})]),
}


def _every_reader_workflow(env, family: str) -> str:
    _wf, _sample, mime, _damages, actions = FAMILIES[family]
    code = f"WF-E2E-DAMAGED-{family.upper()}"
    apply_workflow(env.rt, {
        "code": code, "name": f"every {family} reader",
        "type": {"pdf": "document", "docx": "document"}.get(family, family),
        "input_types": [mime, "application/octet-stream"],
        "steps": [{"name": f"{action} {n}", "action": action, "params": params, "on_failure": "continue"}
                  for n, (action, params) in enumerate(actions)]})
    return code


def _submit_all(env, paths: list[Path], workflow: str) -> list[dict[str, Any]]:
    jobs = [env.submit(p, workflow)[0] for p in paths]  # all queued first: the worker runs them back to back
    return [env.wait(job.id) for job in jobs]


def _assert_no_breaker_counted(details: list[dict[str, Any]]) -> None:
    for detail in details:
        assert detail["status"] in FINAL
        for s in detail["steps"]:
            if s["status"] == "failed":
                assert s["error_class"] == "invalid_input", (s["step_name"], s["error_class"], s["error_message"])
                assert s["error_class"] not in BREAKER_CLASSES
        assert detail["retry_count"] == 0, detail["events"]
        if detail["status"] == "failed":
            assert detail["error_class"] == "invalid_input", detail["error_message"]
            assert "/" not in detail["error_message"].split(": ", 1)[-1], detail["error_message"]  # no paths


def _assert_breakers_closed(env) -> None:
    states = {b["action"]: b["state"] for b in ops.list_breakers(env.rt.engine)}
    assert all(state == "closed" for state in states.values()), states


@pytest.mark.parametrize("family", list(FAMILIES))
def test_damaged_input_never_opens_a_breaker(env, media, tmp_path, family):
    workflow, sample, _mime, damages, _actions = FAMILIES[family]
    assert len(damages) == 7
    good = getattr(media, sample)
    bad = [D.damaged_copy(good, d, tmp_path) for d in damages]

    builtin = _submit_all(env, bad, workflow)
    _assert_no_breaker_counted(builtin)
    failed = [d for d in builtin if d["status"] == "failed"]
    # enough failures that a breaker would have opened had they counted (min 5 calls, 50 %)
    assert len(failed) >= 5, [(d["status"], d["error_message"]) for d in builtin]
    _assert_breakers_closed(env)

    every = _submit_all(env, bad, _every_reader_workflow(env, family))
    _assert_no_breaker_counted(every)
    assert sum(s["status"] == "failed" for d in every for s in d["steps"]) >= 7
    _assert_breakers_closed(env)

    after = env.run(good, workflow)  # at once: no breaker to wait on
    assert_finished_cleanly(env, after, "partial" if family == "docx" else "completed")
    assert not any(e["event_type"] == "wait" for e in after["events"]), after["events"]
