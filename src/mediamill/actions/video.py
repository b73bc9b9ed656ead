"""Video actions: validate, probe, transcode (fused ladders), thumbnails, contact sheet, scenes, HLS.

Consecutive ``transcode_video`` steps fuse (key ``video_ladder``) into ONE ffmpeg process that
decodes once and feeds a scaler and an encoder per step; every step still gets its own output.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mediamill.actions.base import OutputFile, StepContext, StepResult, action, register_fuser
from mediamill.errors import CorruptMedia, InvalidInput, SourceTooLarge, UnsupportedCodec, UnsupportedFormat
from mediamill.media import video as vid
from mediamill.media.contact import compose_sheet
from mediamill.media.probe import AvProbe, is_truncated, last_frame_time, probe_av
from mediamill.media.sniff import require_kind

_ERRORS = ("invalid_input", "timeout", "internal")
ImageFormat = Literal["jpeg", "png", "webp"]
_IMAGE_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_IMAGE_EXT = {"jpeg": "jpg", "png": "png", "webp": "webp"}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_resolution(value: str) -> str:
    value = value.strip().lower()
    if value == "source" or value in vid.RESOLUTIONS:
        return value
    if value.rstrip("p").isascii() and value.rstrip("p").isdigit() and int(value.rstrip("p")) >= 16:
        return f"{int(value.rstrip('p'))}p"
    raise ValueError(f"expected one of {', '.join(vid.RESOLUTIONS)}, a height like '600p', or 'source'")


def _short_side(label: str) -> int | None:
    return None if label == "source" else vid.RESOLUTIONS.get(label) or int(label.rstrip("p"))


class ValidateVideoParams(_Params):
    check_codec: bool = Field(default=True, description="refuse codecs outside allowed_codecs")
    check_duration: bool = Field(default=True, description="apply the duration limits")
    max_duration_s: float | None = Field(default=None, gt=0, description="stricter than the global limit")
    allowed_codecs: list[str] | None = Field(default=None, description="e.g. [h264, hevc]; default any")
    require_audio: bool = False


class TranscodeVideoParams(_Params):
    resolution: str = Field(default="720p", description="1080p, 720p, 480p, 360p, … or 'source'")
    height: int | None = Field(default=None, ge=16, le=8640, description="overrides resolution")
    codec: Literal["h264", "hevc", "vp9", "av1"] = "h264"
    crf: int | None = Field(default=None, ge=0, le=63, description="default per codec: 23/28/33/35")
    preset: vid.Preset = "veryfast"
    audio: bool = True
    audio_bitrate: str = Field(default="128k", pattern=r"^\d{2,3}k$")
    container: Literal["mp4", "webm"] | None = Field(default=None, description="default: mp4, webm for vp9")
    max_fps: float | None = Field(default=None, gt=0, le=240)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        return _check_resolution(value)

    @model_validator(mode="after")
    def _container_fits_codec(self) -> TranscodeVideoParams:
        if self.container == "webm" and self.codec in ("h264", "hevc"):
            raise ValueError(f"{self.codec} cannot go in webm; use mp4")
        return self

    @property
    def label(self) -> str:
        return f"{self.height}p" if self.height else self.resolution

    @property
    def effective_container(self) -> str:
        return self.container or vid.CONTAINER_FOR[self.codec]


class ThumbnailsParams(_Params):
    count: int = Field(default=5, ge=1, le=100)
    width: int = Field(default=320, ge=16, le=3840, description="never upscaled")
    format: ImageFormat = "jpeg"
    quality: int = Field(default=85, ge=1, le=100)
    contact_sheet: bool = Field(default=False, description="also compose the frames into one grid image")
    columns: int = Field(default=5, ge=1, le=20, description="contact sheet columns")


class ContactSheetParams(_Params):
    count: int = Field(default=12, ge=1, le=100)
    columns: int = Field(default=4, ge=1, le=20)
    tile_width: int = Field(default=320, ge=32, le=1920)
    format: ImageFormat = "jpeg"
    quality: int = Field(default=85, ge=1, le=100)
    timestamps: bool = Field(default=True, description="print each frame's time on its tile")


class DetectScenesParams(_Params):
    threshold: float = Field(default=0.3, gt=0, lt=1, description="scene-change score that makes a cut")
    min_scene_seconds: float = Field(default=1.0, ge=0)


class PackageHlsParams(_Params):
    ladder: list[str] = Field(default_factory=lambda: ["720p", "480p", "360p"], min_length=1, max_length=8)
    segment_seconds: float = Field(default=6.0, ge=1, le=30)
    crf: int | None = Field(default=None, ge=0, le=51)
    preset: vid.Preset = "veryfast"
    audio: bool = True
    audio_bitrate: str = Field(default="128k", pattern=r"^\d{2,3}k$")

    @field_validator("ladder")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        return [_check_resolution(v) for v in value]


# -- helpers ---------------------------------------------------------------------------------------
def probe_video(path: Path) -> AvProbe:
    probe = probe_av(path)
    if probe.video is None:
        raise UnsupportedFormat("the file has no video stream")
    return probe


def video_summary(probe: AvProbe) -> dict[str, Any]:
    """The flat facts workflows and reports use (width/height as displayed)."""
    out: dict[str, Any] = {"duration": round(probe.duration, 3), "format": probe.format,
                           "size_bytes": probe.size_bytes, "bitrate": probe.bitrate,
                           "has_video": probe.video is not None, "has_audio": probe.audio is not None}
    if probe.video:
        v = probe.video
        out.update(width=v.width, height=v.height, fps=v.fps, codec=v.codec, rotation=v.rotation,
                   pix_fmt=v.pix_fmt, video_bitrate=v.bitrate, coded_width=v.coded_width,
                   coded_height=v.coded_height, frames=v.frames, profile=v.profile,
                   interlaced=v.interlaced, sample_aspect_ratio=v.sample_aspect_ratio)
    if probe.audio:
        a = probe.audio
        out.update(audio_codec=a.codec, sample_rate=a.sample_rate, channels=a.channels,
                   channel_layout=a.layout, audio_bitrate=a.bitrate)
    return out


def _check_limits(ctx: StepContext, probe: AvProbe) -> None:
    assert probe.video is not None
    p: ValidateVideoParams = ctx.params
    limit = min(ctx.limits.max_video_duration_s, p.max_duration_s or float("inf"))
    # the global limit is a security limit: check_duration=false only drops the workflow's own
    if not p.check_duration:
        limit = ctx.limits.max_video_duration_s
    if probe.duration > limit:
        raise SourceTooLarge(f"video lasts {probe.duration:.1f} s; the limit is {limit:.0f} s")
    pixels = probe.video.coded_width * probe.video.coded_height
    if pixels > ctx.limits.max_video_pixels:
        raise SourceTooLarge(
            f"video frame {probe.video.coded_width}×{probe.video.coded_height} exceeds "
            f"{ctx.limits.max_video_pixels:,} pixels")
    if probe.duration <= 0:
        raise CorruptMedia("the video has no duration")


# -- validate / probe --------------------------------------------------------------------------------
@action("validate_video", params=ValidateVideoParams, family="video", errors=("invalid_input", "internal"))
def validate_video(ctx: StepContext) -> StepResult:
    """Check the input is a decodable video within the duration and resolution limits."""
    mime = require_kind(ctx.input_path, ("video/",), "a video", max_bytes=ctx.limits.max_input_bytes)
    probe = probe_video(ctx.input_path)
    _check_limits(ctx, probe)
    p: ValidateVideoParams = ctx.params
    assert probe.video is not None
    if p.check_codec and p.allowed_codecs and probe.video.codec not in p.allowed_codecs:
        raise UnsupportedCodec(f"video codec {probe.video.codec} is not one of {', '.join(p.allowed_codecs)}")
    if p.require_audio and probe.audio is None:
        raise InvalidInput("the video has no audio track")
    ctx.progress(50.0)
    refuse_truncated(ctx.input_path, probe)
    return StepResult(data={**video_summary(probe), "mime": mime, "valid": True})


def refuse_truncated(path: Path, probe: AvProbe) -> None:
    """ffmpeg encodes whatever a cut-short file still holds and exits 0: refuse it instead of
    publishing a silently shorter rendition (cheap for MP4/MOV: only the sample index is read)."""
    if is_truncated(path, probe.duration):
        raise CorruptMedia("the video is truncated: its data ends before its declared length")


@action("extract_video_metadata", family="video", errors=("invalid_input", "internal"))
def extract_video_metadata(ctx: StepContext) -> StepResult:
    """Probe width, height, duration, fps, codecs, bitrates, rotation and tags."""
    probe = probe_video(ctx.input_path)
    return StepResult(data={**video_summary(probe), "tags": probe.tags})


# -- transcode ---------------------------------------------------------------------------------------
def _output_stem(p: TranscodeVideoParams) -> str:
    return f"video_{p.label}" + ("" if p.codec == "h264" else f"_{p.codec}")


def _rendition(ctx: StepContext) -> vid.Rendition:
    return rendition_for(ctx.params, ctx.work_dir)


def rendition_for(p: TranscodeVideoParams, work_dir: Path) -> vid.Rendition:
    """The rendition a ``transcode_video`` step's params ask for, written into ``work_dir``."""
    container = p.effective_container
    return vid.Rendition(
        output=work_dir / f"{_output_stem(p)}.{container}", short_side=p.height or _short_side(p.label),
        codec=p.codec, crf=p.crf, preset=p.preset, audio=p.audio, audio_bitrate=p.audio_bitrate,
        container=container, max_fps=p.max_fps)


def rendition_result(ctx: StepContext, r: vid.Rendition) -> StepResult:
    summary = video_summary(probe_av(r.output, first_frame=False))
    p: TranscodeVideoParams = ctx.params
    meta = {k: summary.get(k) for k in ("width", "height", "duration", "codec", "fps", "bitrate",
                                        "has_audio", "audio_codec")}
    meta.update(rendition=p.label, container=r.container, faststart=r.container == "mp4")
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(r.output.name, r.output, vid.MIME_FOR[r.container], meta)],
                      data=meta)


def group_timeout(ctxs: Sequence[StepContext]) -> float | None:
    """The budget of a fused run: the engine hands every step of a group the group's total."""
    budgets = [c.timeout_seconds for c in ctxs if c.timeout_seconds]
    return max(budgets) if budgets else None


@register_fuser("video_ladder")
def fuse_transcodes(ctxs: Sequence[StepContext]) -> list[StepResult]:
    """Encode every step's rendition from one decode in one ffmpeg process."""
    by_source: dict[Path, list[int]] = {}
    for i, ctx in enumerate(ctxs):
        by_source.setdefault(ctx.source_path("video/")[0], []).append(i)
    results: dict[int, StepResult] = {}
    for source, indexes in by_source.items():
        group = [ctxs[i] for i in indexes]
        for i, result in zip(indexes, _transcode_group(source, group), strict=True):
            results[i] = result
    return [results[i] for i in range(len(ctxs))]


def _transcode_group(source: Path, group: list[StepContext]) -> list[StepResult]:
    probe = probe_video(source)
    assert probe.video is not None
    refuse_truncated(source, probe)
    renditions = [_rendition(c) for c in group]
    # "never upscale" can make rungs identical (a 360p source asked for 1080p and 720p):
    # encode each distinct rendition once and copy it for the others
    unique: dict[tuple[object, ...], vid.Rendition] = {}
    for r in renditions:
        unique.setdefault((vid.target_size(probe.video, r.short_side), *encoding_key(r)), r)

    def report(pct: float) -> None:
        for c in group:
            c.progress(pct)

    vid.transcode(source, probe, list(unique.values()), timeout=group_timeout(group), on_progress=report)
    for r in renditions:
        encoded = unique[(vid.target_size(probe.video, r.short_side), *encoding_key(r))]
        if encoded.output != r.output:
            shutil.copyfile(encoded.output, r.output)
    return [rendition_result(c, r) for c, r in zip(group, renditions, strict=True)]


def encoding_key(r: vid.Rendition) -> tuple[object, ...]:
    """What makes two renditions' files identical, apart from where they are written."""
    return (r.codec, r.crf, r.preset, r.audio, r.audio_bitrate, r.container, r.max_fps)


@action("transcode_video", params=TranscodeVideoParams, family="video", errors=_ERRORS, fuse="video_ladder",
        splittable=True)
def transcode_video(ctx: StepContext) -> StepResult:
    """One rendition (h264/hevc/vp9/av1): never upscaled, rotation applied, even size, MP4 faststart."""
    return fuse_transcodes([ctx])[0]


# -- frames ------------------------------------------------------------------------------------------
def _frames(ctx: StepContext, probe: AvProbe, count: int, width: int, fmt: str, quality: int,
            stem: str) -> list[tuple[float, Path]]:
    times = vid.clamp_times(vid.frame_times(probe.duration, count), last_frame_time(ctx.input_path))
    paths = [ctx.work_dir / f"{stem}_{i + 1:02d}.{_IMAGE_EXT[fmt]}" for i in range(count)]
    vid.extract_frames(ctx.input_path, times, paths, width=width, fmt=fmt, quality=quality,
                       timeout=ctx.timeout_seconds)
    return list(zip(times, paths, strict=True))


def _frame_size(path: Path) -> tuple[int, int]:
    from mediamill.media.image import read_header

    header = read_header(path)
    return header.width, header.height


@action("generate_thumbnails", params=ThumbnailsParams, family="video", errors=_ERRORS)
def generate_thumbnails(ctx: StepContext) -> StepResult:
    """`count` evenly spaced frames (one ffmpeg process), optionally composed into a contact sheet."""
    p: ThumbnailsParams = ctx.params
    probe = probe_video(ctx.input_path)
    frames = _frames(ctx, probe, p.count, p.width, p.format, p.quality, "thumb")
    outputs = []
    for t, path in frames:
        w, h = _frame_size(path)
        outputs.append(OutputFile(path.name, path, _IMAGE_MIME[p.format], {"time": t, "width": w, "height": h}))
    ctx.progress(90.0 if p.contact_sheet else 100.0)
    data: dict[str, Any] = {"count": len(frames), "times": [t for t, _ in frames],
                            "thumbnails": [o.name for o in outputs]}
    if p.contact_sheet:
        sheet = _sheet(ctx, frames, p.columns, p.format, p.quality, True)
        outputs.append(sheet)
        data["contact_sheet"] = sheet.name
    ctx.progress(100.0)
    return StepResult(outputs=outputs, data=data)


def _sheet(ctx: StepContext, frames: list[tuple[float, Path]], columns: int, fmt: str, quality: int,
           stamps: bool) -> OutputFile:
    path = ctx.work_dir / f"contact_sheet.{_IMAGE_EXT[fmt]}"
    width, height = compose_sheet(frames, path, columns=columns, fmt=fmt, quality=quality, timestamps=stamps)
    meta = {"width": width, "height": height, "frames": len(frames), "columns": columns}
    return OutputFile(path.name, path, _IMAGE_MIME[fmt], meta)


@action("contact_sheet", params=ContactSheetParams, family="video", errors=_ERRORS)
def contact_sheet(ctx: StepContext) -> StepResult:
    """A grid of `count` evenly spaced frames in one image."""
    p: ContactSheetParams = ctx.params
    probe = probe_video(ctx.input_path)
    frames = _frames(ctx, probe, p.count, p.tile_width, "png", 100, "sheet_tile")
    ctx.progress(80.0)
    sheet = _sheet(ctx, frames, p.columns, p.format, p.quality, p.timestamps)
    for _, tile in frames:
        tile.unlink(missing_ok=True)
    ctx.progress(100.0)
    return StepResult(outputs=[sheet], data={"contact_sheet": sheet.name, **sheet.metadata})


# -- scenes ------------------------------------------------------------------------------------------
@action("detect_scenes", params=DetectScenesParams, family="video", errors=_ERRORS)
def detect_scenes(ctx: StepContext) -> StepResult:
    """Cut the video into scenes (ffmpeg's scene-change score); writes scenes.json."""
    p: DetectScenesParams = ctx.params
    probe = probe_video(ctx.input_path)
    cuts = vid.detect_scene_cuts(ctx.input_path, threshold=p.threshold, timeout=ctx.timeout_seconds,
                                 duration_s=probe.duration, on_progress=ctx.progress)
    scenes = [vars(s) for s in vid.scenes_from_cuts(cuts, probe.duration, p.min_scene_seconds)]
    path = ctx.work_dir / "scenes.json"
    path.write_text(json.dumps({"duration": round(probe.duration, 3), "threshold": p.threshold,
                                "scenes": scenes}, indent=2))
    ctx.progress(100.0)
    meta = {"count": len(scenes)}
    return StepResult(outputs=[OutputFile(path.name, path, "application/json", meta)],
                      data={"count": len(scenes), "scenes": scenes})


# -- HLS ---------------------------------------------------------------------------------------------
def _hls_ladder(p: PackageHlsParams, probe: AvProbe, out_dir: Path) -> tuple[list[vid.Rendition], list[str]]:
    """Rungs by decreasing size; rungs that 'never upscale' would make identical are dropped."""
    assert probe.video is not None
    rungs: dict[tuple[int, int], tuple[vid.Rendition, str]] = {}
    for label in p.ladder:
        r = vid.Rendition(output=out_dir, short_side=_short_side(label), crf=p.crf, preset=p.preset,
                          audio=p.audio, audio_bitrate=p.audio_bitrate)
        rungs.setdefault(vid.target_size(probe.video, r.short_side), (r, label))
    ordered = sorted(rungs.items(), key=lambda item: -item[0][0] * item[0][1])
    return [r for _, (r, _) in ordered], [label for _, (_, label) in ordered]


@action("package_hls", params=PackageHlsParams, family="video", errors=_ERRORS)
def package_hls(ctx: StepContext) -> StepResult:
    """HLS for a ladder: hls/master.m3u8, hls/<rung>/index.m3u8 and MPEG-TS segments (H.264/AAC)."""
    p: PackageHlsParams = ctx.params
    source = ctx.source_path("video/")[0]
    probe = probe_video(source)
    refuse_truncated(source, probe)
    out_dir = ctx.work_dir / "hls"
    renditions, names = _hls_ladder(p, probe, out_dir)
    for name in names:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    vid.package_hls(source, probe, renditions, names, out_dir, p.segment_seconds,
                    timeout=ctx.timeout_seconds, on_progress=ctx.progress)
    outputs = [OutputFile("hls/master.m3u8", out_dir / "master.m3u8", "application/vnd.apple.mpegurl",
                          {"variants": names})]
    for name in names:
        for f in sorted((out_dir / name).iterdir()):
            mime = "application/vnd.apple.mpegurl" if f.suffix == ".m3u8" else "video/mp2t"
            outputs.append(OutputFile(f"hls/{name}/{f.name}", f, mime, {"variant": name}))
    ctx.progress(100.0)
    assert probe.video is not None
    sizes = {n: list(vid.target_size(probe.video, r.short_side)) for n, r in zip(names, renditions, strict=True)}
    return StepResult(outputs=outputs, data={"master": "hls/master.m3u8", "variants": names, "sizes": sizes,
                                             "segments": sum(o.mime_type == "video/mp2t" for o in outputs)})
