"""Chunked encoding: find a video's keyframes, plan segments on them, encode a segment, join the parts.

A long input is cut at *source* keyframes, so a segment's decoder starts on a keyframe and no frame is
decoded twice or lost at a seam. Each segment is encoded on its own (any worker of a fleet) with the same
settings as the single-process encode; the encoder opens every segment with an IDR frame (x264/x265 use
closed GOPs by default), so the parts concatenate without re-encoding. Timestamps of each part start at 0
(``setpts=PTS-STARTPTS``) and the concat demuxer offsets each part by the duration of those before it,
so the joined rendition's timestamps are monotonic and evenly spaced across the seams.

Audio is not cut: one sub-task encodes the whole audio track and the join muxes it with the joined video
(cutting AAC at segment edges would leave a priming gap, an audible click, at every seam).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mediamill.errors import CorruptMedia, InvalidInput
from mediamill.media.probe import AvProbe, open_container
from mediamill.media.tools import run_ffmpeg
from mediamill.media.video import Rendition, audio_args, scale_chain, video_codec_args

#: ``parallel: auto`` aims at one segment per this many seconds of input …
AUTO_SEGMENT_SECONDS = 10.0
#: … and never makes more segments than this
MAX_SEGMENTS = 64
#: a segment shorter than this costs more in start-up and join than it saves: fewer, longer segments
MIN_SEGMENT_SECONDS = 2.0


@dataclass(frozen=True)
class FrameIndex:
    """Presentation times of a video's frames (sorted) and which of them are keyframes."""

    times: list[float]
    keyframes: list[int]  # indexes into ``times``

    @property
    def frames(self) -> int:
        return len(self.times)


@dataclass(frozen=True)
class Segment:
    """Frames ``first_frame … first_frame + frames - 1`` of the source, starting at ``start`` seconds."""

    index: int
    first_frame: int
    frames: int
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Segment:
        return cls(**{k: raw[k] for k in ("index", "first_frame", "frames", "start", "end")})


def frame_index(path: Path) -> FrameIndex:
    """Read the video stream's packets (no decoding): every frame's time, and the keyframes."""
    with open_container(path) as container:
        if not container.streams.video:
            raise InvalidInput("the input has no video stream")
        stream = container.streams.video[0]
        tb = stream.time_base
        packets = [(p.pts, bool(p.is_keyframe)) for p in container.demux(stream) if p.pts is not None]
    if not packets:
        raise CorruptMedia("the video stream has no frames")
    order = sorted(range(len(packets)), key=lambda i: packets[i][0])
    times = [float(packets[i][0] * tb) for i in order]
    keys = [n for n, i in enumerate(order) if packets[i][1]]
    return FrameIndex(times=times, keyframes=keys)


def segment_count(parallel: int | str, duration: float) -> int:
    """How many segments ``parallel`` (a number or ``auto``) asks for on an input of ``duration`` seconds."""
    wanted = math.ceil(duration / AUTO_SEGMENT_SECONDS) if parallel == "auto" else int(parallel)
    most = max(1, int(duration // MIN_SEGMENT_SECONDS))
    return max(1, min(wanted, most, MAX_SEGMENTS))


def plan_segments(index: FrameIndex, parts: int) -> list[Segment]:
    """Cut at the keyframes nearest to ``parts`` equal slices (fewer segments when keyframes are sparse)."""
    if index.frames == 0:
        return []
    duration = _duration(index)
    cuts: list[int] = []
    for k in range(1, parts):
        target = index.times[0] + duration * k / parts
        best = min(index.keyframes, key=lambda f: abs(index.times[f] - target))
        if best > (cuts[-1] if cuts else 0):
            cuts.append(best)
    bounds = [0, *cuts, index.frames]
    return [Segment(index=n, first_frame=a, frames=b - a, start=index.times[a],
                    end=index.times[b] if b < index.frames else index.times[0] + duration)
            for n, (a, b) in enumerate(itertools.pairwise(bounds))]


def _duration(index: FrameIndex) -> float:
    """Span of the frames: the last frame lasts as long as the typical gap between frames."""
    times = index.times
    if len(times) < 2:
        return 0.0
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return times[-1] - times[0] + gaps[len(gaps) // 2]


def _seek_point(start: float) -> str:
    # floored to the microsecond: an -ss a hair past the keyframe would drop the segment's first frame
    return f"{math.floor(start * 1_000_000) / 1_000_000:.6f}"


def segment_args(source: Path, probe: AvProbe, renditions: Sequence[Rendition], segment: Segment) -> list[str]:
    """ffmpeg arguments encoding one segment's frames (video only) for every rendition, one decode."""
    n = len(renditions)
    head = "[0:v:0]setpts=PTS-STARTPTS" + (f",split={n}" + "".join(f"[s{i}]" for i in range(n)) + ";"
                                           if n > 1 else ",")
    graph = head + ";".join(f"{f'[s{i}]' if n > 1 else ''}{scale_chain(probe, r)}[v{i}]"
                            for i, r in enumerate(renditions))
    args = ["-ss", _seek_point(segment.start), "-i", str(source), "-filter_complex", graph]
    for i, r in enumerate(renditions):
        args += ["-map", f"[v{i}]", "-frames:v", str(segment.frames), *video_codec_args(r), "-an",
                 "-map_metadata", "-1", "-map_chapters", "-1", "-f", r.container, str(r.output)]
    return args


def encode_segment(source: Path, probe: AvProbe, renditions: Sequence[Rendition], segment: Segment, *,
                   timeout: float | None, on_progress: Callable[[float], None] | None) -> None:
    """Encode one segment of every rendition in one ffmpeg process."""
    run_ffmpeg(segment_args(source, probe, renditions, segment), timeout=timeout,
               duration_s=max(0.001, segment.end - segment.start), on_progress=on_progress,
               what=f"ffmpeg segment {segment.index + 1} encode")


def encode_audio(source: Path, probe: AvProbe, tracks: Sequence[Rendition], *, timeout: float | None) -> None:
    """Encode the whole audio track once per distinct audio setting (``Rendition.output`` is the track file)."""
    args = ["-i", str(source)]
    for r in tracks:
        args += [*audio_args(r, probe.audio is not None), "-vn", "-map_metadata", "-1",
                 "-f", "webm" if r.container == "webm" else "mp4", str(r.output)]
    run_ffmpeg(args, timeout=timeout, duration_s=probe.duration, what="ffmpeg audio encode")


def join_segments(parts: Sequence[Path], audio: Path | None, output: Path, container: str, *,
                  timeout: float | None) -> None:
    """Concatenate encoded parts without re-encoding (concat demuxer, ``-c copy``) and mux the audio."""
    listing = output.with_suffix(".parts.txt")
    listing.write_text("".join(f"file '{_concat_quote(p)}'\n" for p in parts))
    args = ["-f", "concat", "-safe", "0", "-i", str(listing)]
    if audio is not None:
        args += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0"]
    else:
        args += ["-map", "0:v:0"]
    args += ["-c", "copy", "-map_metadata", "-1", "-map_chapters", "-1"]
    if container == "mp4":
        args += ["-movflags", "+faststart"]
    try:
        run_ffmpeg([*args, "-f", container, str(output)], timeout=timeout, what="ffmpeg join")
    finally:
        listing.unlink(missing_ok=True)


def _concat_quote(path: Path) -> str:
    """A path as the concat demuxer's ``file`` directive reads it (single quotes escaped)."""
    return str(path.resolve()).replace("'", "'\\''")
