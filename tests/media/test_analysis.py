"""Transcription, report, manifest, probe_input, doctor, and the http_request action."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from mediamill.actions.base import PriorStep, StoredOutput
from mediamill.errors import InvalidInput, TransientError
from mediamill.media.probe import probe_input
from mediamill.media.tools import doctor_report

from .conftest import run_action


def test_transcribe_audio_writes_timed_transcript(media, tmp_path):
    result = run_action("transcribe_audio", media.wav, tmp_path)
    body = json.loads(result.outputs[0].path.read_text())
    assert body["has_audio"] is True and body["engine"] == "pocketsphinx"
    assert body["duration"] == pytest.approx(2.5, abs=0.05)
    for segment in body["segments"]:
        assert 0 <= segment["start"] <= segment["end"] <= 2.6
        assert all(segment["start"] <= w["start"] <= w["end"] for w in segment["words"])
    assert result.outputs[1].path.read_text().startswith("WEBVTT")


def test_transcribe_video_without_audio_is_a_clear_result(media, tmp_path):
    result = run_action("transcribe_audio", media.video_noaudio, tmp_path)
    assert result.data == {"has_audio": False, "text": "", "segments": 0, "words": 0}
    assert json.loads(result.outputs[0].path.read_text())["has_audio"] is False


def test_transcribe_refuses_garbage(media, tmp_path):
    with pytest.raises(InvalidInput):
        run_action("transcribe_audio", media.text_as_mp4, tmp_path)


def _prior(action, result, name=None):
    return PriorStep(name or action, action, "completed", result.data, result.outputs)


def test_build_report_gathers_earlier_steps(media, tmp_path):
    src = media.video_scenes
    previous = [
        _prior("extract_video_metadata", run_action("extract_video_metadata", src, tmp_path / "m")),
        _prior("generate_thumbnails", run_action("generate_thumbnails", src, tmp_path / "t", {"count": 2})),
        _prior("detect_scenes", run_action("detect_scenes", src, tmp_path / "s")),
        _prior("transcribe_audio", run_action("transcribe_audio", src, tmp_path / "a")),
    ]
    result = run_action("build_report", src, tmp_path / "r", previous=previous)
    report = json.loads(result.outputs[0].path.read_text())
    assert report["metadata"]["width"] == 320 and len(report["scenes"]) == 3
    assert [t["name"] for t in report["thumbnails"]] == ["thumb_01.jpg", "thumb_02.jpg"]
    assert report["transcript"]["has_audio"] is False
    assert result.data["scenes"] == 3


def test_finalize_job_manifest(media, tmp_path):
    thumbs = run_action("generate_thumbnails", media.video, tmp_path / "t", {"count": 2})
    result = run_action("finalize_job", media.video, tmp_path / "f", previous=[_prior("generate_thumbnails", thumbs)])
    [out] = result.outputs
    manifest = json.loads(out.path.read_text())
    assert out.name == "manifest.json" and manifest["job"]["id"] == "job-1"
    first = manifest["outputs"][0]
    data = thumbs.outputs[0].path.read_bytes()
    assert first["sha256"] == hashlib.sha256(data).hexdigest() and first["bytes"] == len(data)
    assert first["mime_type"] == "image/jpeg" and first["metadata"]["width"] == 320


def test_finalize_job_lists_stored_outputs_as_the_engine_measured_them(media, tmp_path, monkeypatch):
    """Outputs the engine stored come with the size and SHA-256 measured while storing them: the manifest takes
    those and reads no file again; an output without them (a fused run's own) is still read."""
    from mediamill.actions import finalize

    thumbs = run_action("generate_thumbnails", media.video, tmp_path / "t", {"count": 2})
    first, second = thumbs.outputs
    data = first.path.read_bytes()
    stored = StoredOutput(first.name, first.path, first.mime_type, first.metadata, len(data),
                          hashlib.sha256(data).hexdigest())
    read: list[str] = []
    digest = finalize.file_digest
    monkeypatch.setattr(finalize, "file_digest", lambda path: read.append(path.name) or digest(path))
    prior = PriorStep("generate_thumbnails", "generate_thumbnails", "completed", thumbs.data, [stored, second])
    result = run_action("finalize_job", media.video, tmp_path / "f", previous=[prior])
    entries = json.loads(result.outputs[0].path.read_text())["outputs"]
    assert read == [second.path.name]  # the stored one was not read again
    assert (entries[0]["bytes"], entries[0]["sha256"]) == (stored.bytes, stored.checksum)
    assert entries[1]["sha256"] == hashlib.sha256(second.path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name, mime, expect", [
    ("video_rotated", "video/mp4", {"width": 180, "height": 320, "rotation": 90, "has_audio": True}),
    ("m4a", "audio/mp4", {"sample_rate": 44100, "channels": 1, "codec": "aac"}),
    ("png_alpha", "image/png", {"width": 300, "height": 200, "has_alpha": True, "format": "png"}),
    ("jpeg_exif_rotated", "image/jpeg", {"width": 360, "height": 640}),
    ("pdf", "application/pdf", {"pages": 3}),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", {"format": "docx"}),
])
def test_probe_input(media, name, mime, expect):
    facts = probe_input(getattr(media, name), mime)
    assert "error" not in facts
    assert {k: facts[k] for k in expect} == expect


@pytest.mark.parametrize("name, mime", [("empty", "video/mp4"), ("random_bytes", "image/png"),
                                        ("video_truncated_no_index", "video/mp4"), ("text_as_mp4", "application/pdf"),
                                        ("pdf_encrypted", "application/pdf"), ("png_bomb", "image/png")])
def test_probe_input_never_raises(media, name, mime):
    facts = probe_input(getattr(media, name), mime)
    assert "error" in facts or facts.get("width") == 50_000


def test_doctor_report():
    report = doctor_report()
    assert report["ffmpeg"]["available"] and report["ffmpeg"]["version"].startswith("ffmpeg version")
    assert report["libvips"]["version"].startswith("8.")
    assert report["pocketsphinx"]["model_present"] is True
    assert set(report["libreoffice"]) >= {"available", "path"}
    json.dumps(report)


class _Handler(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Handler.calls.append(body)
        status = {"/ok": 200, "/busy": 503, "/bad": 400}[self.path]
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"accepted": true}')

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("MEDIAMILL_URL_ALLOWLIST", "127.0.0.1")
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_request_posts_job_metadata(server, media, tmp_path):
    result = run_action("http_request", media.jpeg, tmp_path, {"url": f"{server}/ok"})
    assert result.data["status_code"] == 200 and result.data["response"] == {"accepted": True}
    assert _Handler.calls[-1]["job"]["metadata"] == {"k": "v"}


def test_http_request_classifies_failures(server, media, tmp_path):
    with pytest.raises(TransientError):
        run_action("http_request", media.jpeg, tmp_path, {"url": f"{server}/busy"})
    with pytest.raises(InvalidInput):
        run_action("http_request", media.jpeg, tmp_path, {"url": f"{server}/bad"})


def test_http_request_refuses_private_addresses(media, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDIAMILL_URL_ALLOWLIST", raising=False)
    with pytest.raises(InvalidInput, match="non-public"):
        run_action("http_request", media.jpeg, tmp_path, {"url": "http://127.0.0.1:9/hook"})
