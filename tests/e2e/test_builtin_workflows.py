"""The five built-in workflows end to end: submit → a real Worker (forkserver children, fusion) →
outputs in storage, on SQLite and PostgreSQL. Outputs are checked with probers (size, duration,
codec, faststart, format, page count, waveform length), never byte-compared."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from tests.e2e.support import (
    assert_finished_cleanly,
    assert_manifest,
    assert_one_execution_per_step,
    image_info,
)
from tests.helpers import apply_workflow
from tests.media.probers import mp4_faststart, probe_video

RENDITIONS = ("1080p", "720p", "480p")


def close(a: float, b: float, tol: float = 0.1) -> bool:
    return abs(a - b) <= tol


def assert_video(path: Path, *, width: int, height: int, duration: float, audio: bool = True) -> dict:
    info = probe_video(path)
    assert (info["width"], info["height"]) == (width, height), info
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p", info
    assert close(info["duration"], duration), info
    assert mp4_faststart(path), f"{path.name}: moov is not before mdat"
    if audio:
        assert info["audio_codec"] == "aac", info
    return info


def test_video_transcode(env, media):
    detail = env.run(media.video_hd, "WF-VIDEO-TRANSCODE")
    files = assert_finished_cleanly(env, detail)
    assert_one_execution_per_step(env, detail)
    for rung in RENDITIONS:  # 640×360 source: never upscaled, every rung keeps the source size
        assert_video(files[f"video_{rung}.mp4"], width=640, height=360, duration=2.0)
    thumbs = sorted(n for n in files if n.startswith("thumb_"))
    assert len(thumbs) == 5
    for name in thumbs:
        assert image_info(files[name]) == ("jpeg", 320, 180)
    assert_manifest(detail, files)
    assert env.stored(detail["input_key"]).stat().st_size == detail["input_size"]


def test_fused_ladder_keeps_one_output_per_step(env, media):
    """A ladder below the source size: three distinct renditions from one fused unit."""
    apply_workflow(env.rt, {
        "code": "WF-E2E-LADDER", "name": "small ladder", "type": "video", "input_types": ["video/mp4"],
        "steps": [{"name": f"Transcode {r}", "action": "transcode_video", "params": {"resolution": r}}
                  for r in ("360p", "240p", "144p")] + [{"name": "Finalize", "action": "finalize_job"}]})
    detail = env.run(media.video_hd, "WF-E2E-LADDER")
    files = assert_finished_cleanly(env, detail)
    assert_one_execution_per_step(env, detail)
    sizes = {"360p": (640, 360), "240p": (426, 240), "144p": (256, 144)}
    for rung, (w, h) in sizes.items():
        assert_video(files[f"video_{rung}.mp4"], width=w, height=h, duration=2.0)
    assert len({r["checksum"] for r in detail["outputs"]}) == len(detail["outputs"])
    assert_manifest(detail, files)


@pytest.mark.parametrize("name, size, resized", [
    ("jpeg", (640, 360), False),
    ("large_jpeg", (2400, 1350), True),
])
def test_image_process(env, media, name, size, resized):
    detail = env.run(getattr(media, name), "WF-IMAGE-PROCESS")
    files = assert_finished_cleanly(env, detail)
    assert_one_execution_per_step(env, detail, {} if resized else {"Resize Large": "skipped"})
    w, h = size
    if resized:
        w, h = 2000, round(h * 2000 / w)
        assert image_info(files["image_2000.jpg"]) == ("jpeg", w, h)
    assert image_info(files["thumbnail_300.jpg"]) == ("jpeg", 300, round(300 * h / w))
    assert image_info(files["image_optimized.jpg"]) == ("jpeg", w, h)
    assert image_info(files["image.webp"]) == ("webp", w, h)
    assert {r["name"] for r in detail["outputs"]} == set(files)


def test_audio_transcode(env, media):
    detail = env.run(media.wav, "WF-AUDIO-TRANSCODE")
    files = assert_finished_cleanly(env, detail)
    assert_one_execution_per_step(env, detail)
    mp3, aac = probe_video(files["audio.mp3"]), probe_video(files["audio.m4a"])
    assert mp3["audio_codec"] == "mp3" and close(mp3["duration"], 2.5), mp3
    assert aac["audio_codec"] == "aac" and close(aac["duration"], 2.5), aac
    assert mp3["sample_rate"] == 44100 and aac["channels"] == 1
    peaks = json.loads(files["waveform.json"].read_text())  # BBC audiowaveform v2, as peaks.js reads it
    assert peaks["version"] == 2 and peaks["channels"] == 1 and peaks["bits"] == 8
    expected = math.ceil(2.5 * peaks["sample_rate"] / peaks["samples_per_pixel"])
    assert abs(peaks["length"] - expected) <= 1, peaks["length"]
    assert len(peaks["data"]) == 2 * peaks["length"] * peaks["channels"]
    assert all(-128 <= v <= 127 for v in peaks["data"])
    assert image_info(files["waveform.png"])[0] == "png"
    assert_manifest(detail, files)


def test_doc_process_pdf(env, media):
    detail = env.run(media.pdf, "WF-DOC-PROCESS")
    files = assert_finished_cleanly(env, detail)
    assert_one_execution_per_step(env, detail, {"Convert to PDF": "skipped"})  # the input is already a PDF
    # validate, extract and render ran as one unit on one open of the PDF (``fuse_document_steps``)
    fused = [s for s in detail["steps"] if s["step_name"] in ("Validate Document", "Extract Text", "Render Thumbnail")]
    assert len(fused) == 3 and len({s["completed_at"] for s in fused}) == 1, fused
    pages = len(pdfium.PdfDocument(str(media.pdf)))
    text = json.loads(files["text.json"].read_text())
    assert len(text["pages"]) == pages == 3
    assert [p["text"] for p in text["pages"]] == ["Hello page one", "Second page here", "Third and last"]
    assert "Second page here" in files["text.txt"].read_text()
    fmt, width, height = image_info(files["page_1.png"])
    assert fmt == "png" and width == 600 and close(height, 600 * 792 / 612, 1)  # US Letter's aspect
    assert_manifest(detail, files)


def test_doc_process_docx(env, media):
    """Without LibreOffice the DOCX → PDF steps fail as ``unavailable`` and, being ``continue``,
    leave the job ``partial`` with the text still extracted."""
    has_office = shutil.which("soffice") or shutil.which("libreoffice")
    detail = env.run(media.docx, "WF-DOC-PROCESS")
    files = assert_finished_cleanly(env, detail, "completed" if has_office else "partial")
    if has_office:
        assert_one_execution_per_step(env, detail)
        assert len(pdfium.PdfDocument(str(files["document.pdf"]))) >= 1
    else:  # each step its own unit (a DOCX's steps are not fused): one failed step leaves the others' runs alone
        assert_one_execution_per_step(env, detail, {"Render Thumbnail": "failed", "Convert to PDF": "failed"})
        assert len({s["completed_at"] for s in detail["steps"]}) == len(detail["steps"]), detail["steps"]
        failed = [s for s in detail["steps"] if s["status"] == "failed"]
        assert {s["error_class"] for s in failed} == {"unavailable"}
        assert all("LibreOffice" in s["error_message"] for s in failed)
    assert "Second paragraph." in files["text.txt"].read_text()
    assert_manifest(detail, files)


def test_video_analyze(env, media):
    detail = env.run(media.analyze_clip, "WF-VIDEO-ANALYZE")
    files = assert_finished_cleanly(env, detail)
    assert_one_execution_per_step(env, detail)
    report = json.loads(files["report.json"].read_text())
    meta = report["metadata"]
    assert (meta["width"], meta["height"]) == (320, 180) and close(meta["duration"], 3.0)
    assert meta["codec"] == "h264" and meta["has_audio"] is True
    cuts = [s["start"] for s in report["scenes"][1:]]
    assert len(report["scenes"]) == 2 and close(cuts[0], 1.5, 0.1), report["scenes"]
    assert report["transcript"]["has_audio"] is True and close(report["transcript"]["duration"], 3.0)
    fmt, width, height = image_info(files["contact_sheet.jpg"])
    assert fmt == "jpeg" and width > 320 and height > 0
    assert json.loads(files["scenes.json"].read_text())["scenes"] == report["scenes"]
    assert files["transcript.vtt"].read_text().startswith("WEBVTT")


def test_outputs_stay_hidden_when_the_job_fails_before_finalize(env, media):
    """Outputs are published by finalize_job: a job that fails before it leaves them invisible."""
    apply_workflow(env.rt, {
        "code": "WF-E2E-UNPUBLISHED", "name": "fails before finalize", "type": "audio",
        "input_types": ["audio/wav"],
        "steps": [{"name": "Transcode MP3", "action": "transcode_audio", "params": {"format": "mp3"}},
                  {"name": "Needs video", "action": "validate_video", "on_failure": "stop"},
                  {"name": "Finalize", "action": "finalize_job"}]})
    detail = env.run(media.wav, "WF-E2E-UNPUBLISHED")
    assert detail["status"] == "failed" and detail["error_class"] == "invalid_input"
    [row] = detail["outputs"]
    assert row["name"] == "audio.mp3" and not row["visible"]
    assert not any(s["step_name"] == "Finalize" for s in detail["steps"])
