"""A clip made for chunked encoding (a keyframe every second) and the facts that compare two renditions."""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av

from mediamill.media.tools import ffmpeg


def make_gop_clip(path: Path, *, seconds: int = 12, size: str = "320x180", fps: int = 25,
                  audio: bool = True, preset: str = "ultrafast") -> Path:
    """H.264 (+ AAC) from ffmpeg's test sources with a keyframe every second exactly (no scene-cut IDRs)."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                 "-c:a", "aac", "-ac", "2"]
    args += ["-c:v", "libx264", "-preset", preset, "-g", str(fps), "-keyint_min", str(fps), "-sc_threshold", "0",
             "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)]
    subprocess.run([ffmpeg().path, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, timeout=600)
    return path


@dataclass
class RenditionFacts:
    frames: int
    duration: float  # of the video stream
    frame_step: float  # the typical gap between two frames
    keyframes: list[float]  # presentation times of the keyframes
    pts_monotonic: bool  # presentation times strictly increase, sorted
    dts_monotonic: bool  # decode times strictly increase in file order
    even_spacing: bool  # every gap between consecutive frames is the same (no seam)
    audio_duration: float | None
    width: int
    height: int


def rendition_facts(path: Path) -> RenditionFacts:
    """Read a rendition's packets (no decoding) and measure what a seam would break."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        tb = v.time_base
        packets = [(p.pts, p.dts, p.is_keyframe) for p in c.demux(v) if p.pts is not None]
        audio = c.streams.audio[0] if c.streams.audio else None
        audio_duration = float(audio.duration * audio.time_base) if audio is not None and audio.duration else None
        width, height = v.codec_context.width, v.codec_context.height
        duration = float(v.duration * tb) if v.duration else (c.duration or 0) / 1e6
    pts = sorted(p for p, _, _ in packets)
    dts = [d for _, d, _ in packets]
    gaps = [b - a for a, b in itertools.pairwise(pts)]
    return RenditionFacts(
        frames=len(packets), duration=duration, frame_step=float(sorted(gaps)[len(gaps) // 2] * tb),
        keyframes=[round(float(p * tb), 4) for p, _, k in sorted(packets) if k],
        pts_monotonic=len(set(pts)) == len(pts), dts_monotonic=all(b > a for a, b in itertools.pairwise(dts)),
        even_spacing=len(set(gaps)) <= 1, audio_duration=audio_duration, width=width, height=height)
