"""Analysis actions: offline transcription and the JSON report of a video analysis job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mediamill.actions.base import OutputFile, PriorStep, StepContext, StepResult, action
from mediamill.errors import SourceTooLarge
from mediamill.media import speech
from mediamill.media.probe import probe_av


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TranscribeParams(_Params):
    language: str = Field(default="en-us", pattern=r"^en-us$", description="the model the wheel ships")
    captions: bool = Field(default=True, description="also write transcript.vtt")


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.write_text(json.dumps(body, ensure_ascii=False, indent=1))


@action("transcribe_audio", params=TranscribeParams, family="analysis",
        errors=("invalid_input", "timeout", "internal"))
def transcribe_audio(ctx: StepContext) -> StepResult:
    """Speech-to-text with pocketsphinx (offline); transcript.json with word and segment times."""
    probe = probe_av(ctx.input_path, first_frame=False)
    out = ctx.work_dir / "transcript.json"
    if probe.audio is None:
        # a silent video is a normal input here: say so instead of failing the job
        _write_json(out, {"has_audio": False, "text": "", "segments": [], "duration": round(probe.duration, 3)})
        ctx.progress(100.0)
        return StepResult(outputs=[OutputFile(out.name, out, "application/json", {"has_audio": False})],
                          data={"has_audio": False, "text": "", "segments": 0, "words": 0})
    if probe.duration > ctx.limits.max_transcribe_seconds:
        raise SourceTooLarge(f"audio lasts {probe.duration:.0f} s; transcription is limited to "
                             f"{ctx.limits.max_transcribe_seconds:.0f} s")
    transcript = speech.transcribe(ctx.input_path, timeout=ctx.timeout_seconds, on_progress=ctx.progress)
    _write_json(out, {"has_audio": True, **transcript.as_json()})
    words = sum(len(s.words) for s in transcript.segments)
    facts = {"has_audio": True, "segments": len(transcript.segments), "words": words,
             "duration": transcript.duration, "language": transcript.language}
    outputs = [OutputFile(out.name, out, "application/json", facts)]
    if ctx.params.captions:
        vtt = ctx.work_dir / "transcript.vtt"
        vtt.write_text(speech.webvtt(transcript))
        outputs.append(OutputFile(vtt.name, vtt, "text/vtt", {"cues": len(transcript.segments)}))
    ctx.progress(100.0)
    return StepResult(outputs=outputs, data={**facts, "text": transcript.text[:10_000],
                                             "words_per_minute": speech.words_per_minute(transcript)})


# -- report ----------------------------------------------------------------------------------------------
def _completed(ctx: StepContext, action_name: str) -> PriorStep | None:
    for prior in reversed(ctx.previous):
        if prior.action == action_name and prior.status == "completed":
            return prior
    return None


def _json_output(prior: PriorStep | None, name: str) -> dict[str, Any] | None:
    """An earlier step's JSON output, when the engine made it available to this step."""
    if prior is None:
        return None
    for out in prior.outputs:
        if out.name == name and Path(out.path).is_file():
            try:
                loaded = json.loads(Path(out.path).read_text())
                return loaded if isinstance(loaded, dict) else None
            except (OSError, ValueError):
                return None
    return None


def _metadata(ctx: StepContext) -> dict[str, Any]:
    for name in ("extract_video_metadata", "validate_video", "extract_audio_metadata", "validate_audio"):
        data = ctx.prior_data(name)
        if data:
            return {k: v for k, v in data.items() if k not in ("valid", "chainable")}
    return {}


def _images(ctx: StepContext) -> list[dict[str, Any]]:
    images = []
    for prior in ctx.previous:
        if prior.status == "completed" and prior.action in ("generate_thumbnails", "contact_sheet"):
            images += [{"name": o.name, "mime_type": o.mime_type, **o.metadata} for o in prior.outputs]
    return images


def _transcript(ctx: StepContext) -> dict[str, Any] | None:
    prior = _completed(ctx, "transcribe_audio")
    body = _json_output(prior, "transcript.json")
    if body is not None:
        return body
    return dict(prior.data) if prior else None


@action("build_report", family="analysis", errors=("internal",))
def build_report(ctx: StepContext) -> StepResult:
    """report.json: metadata, scenes, transcript and thumbnails gathered from the earlier steps."""
    scenes: list[dict[str, Any]] | None = (ctx.prior_data("detect_scenes") or {}).get("scenes")
    transcript = _transcript(ctx)
    images = _images(ctx)
    steps = [{"name": p.name, "action": p.action, "status": p.status} for p in ctx.previous]
    report = {
        "job": {k: ctx.job.get(k) for k in ("id", "job_code", "priority", "metadata") if k in ctx.job},
        "metadata": _metadata(ctx), "scenes": scenes, "transcript": transcript, "thumbnails": images,
        "steps": steps,
    }
    out = ctx.work_dir / "report.json"
    _write_json(out, report)
    summary = {"scenes": len(scenes or []), "thumbnails": len(images), "has_transcript": transcript is not None,
               "steps": len(steps)}
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(out.name, out, "application/json", summary)], data=summary)
