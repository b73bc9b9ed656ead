"""The child-side work of a chunked (``parallel:``) transcode unit: plan, segment, audio, join.

A unit is one or more fused ``transcode_video`` steps (a ladder). The engine sends these operations to a
step child as ``{"chunk": {"op": …}}`` tasks; they read and write local files only (the engine moves
files between workers through storage):

    plan     probe the source, cut it at keyframes → segments (``[]``: too short, encode in one piece)
    segment  encode one segment of every distinct rendition of the unit (video only, one decode)
    audio    encode the whole audio track once per distinct audio setting
    join     concatenate each rendition's parts without re-encoding, mux its audio → one result per step

Every step keeps the output name, MIME type and metadata the single-process path gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mediamill.actions.base import StepContext, get_action
from mediamill.actions.video import (
    TranscodeVideoParams,
    encoding_key,
    probe_video,
    refuse_truncated,
    rendition_for,
    rendition_result,
)
from mediamill.errors import InternalError
from mediamill.media import chunked as ch
from mediamill.media import video as vid
from mediamill.media.probe import AvProbe

Progress = Callable[[float], None]


def _params(raw: list[dict[str, Any]]) -> list[TranscodeVideoParams]:
    spec = get_action("transcode_video")
    assert spec is not None
    return [spec.params.model_validate(p or {}) for p in raw]  # type: ignore[misc]


def distinct_renditions(probe: AvProbe, params: list[TranscodeVideoParams], work_dir: Path
                        ) -> tuple[list[vid.Rendition], list[int]]:
    """The renditions to encode (identical rungs once, as the single path does) and each step's one."""
    assert probe.video is not None
    keys: list[tuple[object, ...]] = []
    of_step = []
    for p in params:
        r = rendition_for(p, work_dir)
        key = (vid.target_size(probe.video, r.short_side), *encoding_key(r))
        if key not in keys:
            keys.append(key)
        of_step.append(keys.index(key))
    firsts = [of_step.index(u) for u in range(len(keys))]
    return [vid.Rendition(**{**rendition_for(params[i], work_dir).__dict__,
                             "output": work_dir / f"r{u}.{params[i].effective_container}"})
            for u, i in enumerate(firsts)], of_step


def audio_tracks(probe: AvProbe, params: list[TranscodeVideoParams], work_dir: Path
                 ) -> tuple[list[vid.Rendition], list[int | None]]:
    """The audio tracks to encode (one per distinct container and bitrate) and each step's one (None: silent)."""
    keys: list[tuple[str, str]] = []
    of_step: list[int | None] = []
    for p in params:
        if not (p.audio and probe.audio is not None):
            of_step.append(None)
            continue
        key = (p.effective_container, p.audio_bitrate)
        if key not in keys:
            keys.append(key)
        of_step.append(keys.index(key))
    tracks = [vid.Rendition(output=work_dir / f"a{n}.{'webm' if c == 'webm' else 'm4a'}", short_side=None,
                            audio_bitrate=b, container=c) for n, (c, b) in enumerate(keys)]
    return tracks, of_step


def plan(task: dict[str, Any]) -> dict[str, Any]:
    """Segments for the unit, or none when the input is too short or cannot be cut exactly."""
    source = Path(task["source"])
    probe = probe_video(source)
    refuse_truncated(source, probe)
    assert probe.video is not None
    params = _params(task["params"])
    if any(p.max_fps and probe.video.fps > p.max_fps for p in params):
        # a frame-rate change restarts its frame grid at every seam: encode in one piece to keep exact counts
        return {"segments": [], "reason": "max_fps changes the frame rate"}
    parts = ch.segment_count(task["parallel"], probe.duration)
    if parts < 2:
        return {"segments": [], "reason": f"the input lasts {probe.duration:.1f} s"}
    segments = ch.plan_segments(ch.frame_index(source), parts)
    if len(segments) < 2:
        return {"segments": [], "reason": "no keyframe to cut at"}
    return {"segments": [s.to_dict() for s in segments], "duration": probe.duration,
            "frames": sum(s.frames for s in segments)}


def segment(task: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Encode one segment of each distinct rendition; returns the files in rendition order."""
    source, work_dir = Path(task["source"]), Path(task["work_dir"])
    work_dir.mkdir(parents=True, exist_ok=True)
    probe = probe_video(source)
    renditions, _ = distinct_renditions(probe, _params(task["params"]), work_dir)
    ch.encode_segment(source, probe, renditions, ch.Segment.from_dict(task["segment"]),
                      timeout=task.get("timeout"), on_progress=progress)
    return {"files": [str(r.output) for r in renditions]}


def audio(task: dict[str, Any]) -> dict[str, Any]:
    """Encode the audio tracks of the unit; returns the files in track order."""
    source, work_dir = Path(task["source"]), Path(task["work_dir"])
    work_dir.mkdir(parents=True, exist_ok=True)
    probe = probe_video(source)
    tracks, _ = audio_tracks(probe, _params(task["params"]), work_dir)
    if tracks:
        ch.encode_audio(source, probe, tracks, timeout=task.get("timeout"))
    return {"files": [str(t.output) for t in tracks]}


def join(task: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Join every rendition from its parts (``task["parts"][segment][rendition]``) and its audio track."""
    source = Path(task["source"])
    probe = probe_video(source)
    params = _params(task["params"])
    scratch = Path(task["work_dir"])
    renditions, of_step = distinct_renditions(probe, params, scratch)
    _, audio_of = audio_tracks(probe, params, scratch)
    parts: list[list[str]] = task["parts"]
    results = []
    for i, p in enumerate(params):
        work_dir = Path(task["step_dirs"][i])
        work_dir.mkdir(parents=True, exist_ok=True)
        r = rendition_for(p, work_dir)
        track = audio_of[i]
        ch.join_segments([Path(seg[of_step[i]]) for seg in parts],
                         Path(task["audio"][track]) if track is not None else None, r.output, r.container,
                         timeout=task.get("timeout"))
        progress(100.0 * (i + 1) / len(params))
        ctx = StepContext(input_path=source, input_mime="", work_dir=work_dir, params=p, step_name="",
                          action="transcode_video")
        result = rendition_result(ctx, r)
        result.data.update(segments=len(parts), renditions_joined=len(renditions))
        results.append({"outputs": [{"name": o.name, "path": str(o.path), "mime_type": o.mime_type,
                                     "metadata": o.metadata} for o in result.outputs], "data": result.data})
    return {"results": results}


def run_chunk_task(task: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Dispatch one chunk operation (the step child's entry point for them)."""
    op = task.get("op")
    if op == "plan":
        return plan(task)
    if op == "segment":
        return segment(task, progress)
    if op == "audio":
        return audio(task)
    if op == "join":
        return join(task, progress)
    raise InternalError(f"unknown chunk operation {op!r}")
