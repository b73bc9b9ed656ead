"""Audio actions: validate, probe (+ loudness), transcode (fusable), waveform (peaks JSON + PNG).

Consecutive ``transcode_audio`` steps fuse (key ``audio_transcode``): one ffmpeg process
decodes once and writes every step's format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mediamill.actions.base import OutputFile, StepContext, StepResult, action, register_fuser
from mediamill.actions.video import group_timeout
from mediamill.errors import CorruptMedia, SourceTooLarge, UnsupportedFormat
from mediamill.media import audio as aud
from mediamill.media.probe import AvProbe, is_truncated, probe_av
from mediamill.media.sniff import require_kind

_ERRORS = ("invalid_input", "timeout", "internal")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidateAudioParams(_Params):
    max_duration_s: float | None = Field(default=None, gt=0, description="stricter than the global limit")


class AudioMetadataParams(_Params):
    loudness: bool = Field(default=True, description="measure EBU R128 loudness (one extra decode)")


class TranscodeAudioParams(_Params):
    format: Literal["mp3", "aac", "opus", "flac", "wav"] = "mp3"
    bitrate: str = Field(default="192k", pattern=r"^\d{2,3}k$", description="ignored for flac/wav")
    sample_rate: int | None = Field(default=None, ge=8000, le=192_000)
    channels: int | None = Field(default=None, ge=1, le=8)


class WaveformParams(_Params):
    samples_per_pixel: int = Field(default=256, ge=16, le=1_000_000, description="zoom level of the data")
    bits: Literal[8, 16] = 8
    max_length: int = Field(default=200_000, ge=100, description="raise samples_per_pixel beyond this")
    image_width: int = Field(default=1800, ge=100, le=10_000)
    image_height: int = Field(default=280, ge=20, le=2000)
    color: str = Field(default="#3a7bd5", pattern=r"^#[0-9a-fA-F]{6}$")
    background: str = Field(default="#00000000", pattern=r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")


def _probe_audio(path: Path) -> AvProbe:
    probe = probe_av(path, first_frame=False)
    if probe.audio is None:
        raise UnsupportedFormat("the file has no audio stream")
    return probe


def audio_summary(probe: AvProbe) -> dict[str, Any]:
    """The flat facts workflows and reports use."""
    assert probe.audio is not None
    a = probe.audio
    return {"duration": round(probe.duration, 3), "format": probe.format, "codec": a.codec,
            "sample_rate": a.sample_rate, "channels": a.channels, "channel_layout": a.layout,
            "bitrate": a.bitrate or probe.bitrate, "size_bytes": probe.size_bytes,
            "has_video": probe.video is not None}


@action("validate_audio", params=ValidateAudioParams, family="audio", errors=("invalid_input", "internal"))
def validate_audio(ctx: StepContext) -> StepResult:
    """Check the input carries a decodable audio stream within the duration limit."""
    mime = require_kind(ctx.input_path, ("audio/", "video/"), "audio",
                        max_bytes=ctx.limits.max_input_bytes)
    probe = _probe_audio(ctx.input_path)
    limit = min(ctx.limits.max_audio_duration_s, ctx.params.max_duration_s or float("inf"))
    if probe.duration > limit:
        raise SourceTooLarge(f"audio lasts {probe.duration:.1f} s; the limit is {limit:.0f} s")
    if probe.duration <= 0:
        raise CorruptMedia("the audio has no duration")
    if is_truncated(ctx.input_path, probe.duration):
        raise CorruptMedia("the audio is truncated: its data ends before its declared length")
    ctx.progress(100.0)
    return StepResult(data={**audio_summary(probe), "mime": mime, "valid": True})


@action("extract_audio_metadata", params=AudioMetadataParams, family="audio", errors=_ERRORS)
def extract_audio_metadata(ctx: StepContext) -> StepResult:
    """Duration, sample rate, channels, codec, bitrate, tags and (optionally) loudness."""
    probe = _probe_audio(ctx.input_path)
    data = {**audio_summary(probe), "tags": probe.tags}
    if ctx.params.loudness:
        data["loudness"] = aud.loudness(ctx.input_path, timeout=ctx.timeout_seconds)
    ctx.progress(100.0)
    return StepResult(data=data)


def _rendition(ctx: StepContext) -> aud.AudioRendition:
    p: TranscodeAudioParams = ctx.params
    ext = aud.FORMATS[p.format].ext
    return aud.AudioRendition(output=ctx.work_dir / f"audio.{ext}", format=p.format, bitrate=p.bitrate,
                              sample_rate=p.sample_rate, channels=p.channels)


def _rendition_result(ctx: StepContext, r: aud.AudioRendition) -> StepResult:
    summary = audio_summary(_probe_audio(r.output))
    meta = {k: summary[k] for k in ("duration", "codec", "sample_rate", "channels", "bitrate")}
    meta["format"] = r.format
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(r.output.name, r.output, aud.FORMATS[r.format].mime, meta)], data=meta)


@register_fuser("audio_transcode")
def fuse_audio_transcodes(ctxs: Sequence[StepContext]) -> list[StepResult]:
    """Every step's format from one decode in one ffmpeg process."""
    source = ctxs[0].source_path("audio/")[0]
    if any(c.source_path("audio/")[0] != source for c in ctxs):
        return [fuse_audio_transcodes([c])[0] for c in ctxs]
    probe = _probe_audio(source)
    renditions = [_rendition(c) for c in ctxs]

    def report(pct: float) -> None:
        for c in ctxs:
            c.progress(pct)

    aud.transcode(source, renditions, duration_s=probe.duration, timeout=group_timeout(ctxs),
                  on_progress=report)
    return [_rendition_result(c, r) for c, r in zip(ctxs, renditions, strict=True)]


@action("transcode_audio", params=TranscodeAudioParams, family="audio", errors=_ERRORS, fuse="audio_transcode")
def transcode_audio(ctx: StepContext) -> StepResult:
    """Encode to MP3, AAC (.m4a), Opus (.opus), FLAC or WAV; named audio.<ext>."""
    return fuse_audio_transcodes([ctx])[0]


@action("generate_waveform", params=WaveformParams, family="audio", errors=("invalid_input", "internal"))
def generate_waveform(ctx: StepContext) -> StepResult:
    """Peaks JSON in BBC audiowaveform's format (for peaks.js) and a PNG picture of it."""
    p: WaveformParams = ctx.params
    source = ctx.input_path
    probe = _probe_audio(source)
    assert probe.audio is not None
    spp = aud.samples_per_pixel_for(probe.duration, probe.audio.sample_rate, p.samples_per_pixel, p.max_length)
    peaks = aud.compute_peaks(source, samples_per_pixel=spp, bits=p.bits)
    ctx.progress(70.0)
    json_path = ctx.work_dir / "waveform.json"
    json_path.write_text(json.dumps(peaks.as_json(), separators=(",", ":")))
    png_path = ctx.work_dir / "waveform.png"
    aud.draw_waveform(peaks, png_path, width=p.image_width, height=p.image_height, color=p.color,
                      background=p.background)
    ctx.progress(100.0)
    facts = {"length": peaks.length, "samples_per_pixel": spp, "sample_rate": peaks.sample_rate,
             "bits": p.bits, "duration": round(peaks.samples / peaks.sample_rate, 3)}
    return StepResult(outputs=[
        OutputFile(json_path.name, json_path, "application/json", facts),
        OutputFile(png_path.name, png_path, "image/png", {"width": p.image_width, "height": p.image_height}),
    ], data=facts)
