"""Probing: what a media file is, read cheaply (headers and at most a first frame).

``probe_av`` is the strict prober the actions use (bad input raises an ``InvalidInput``
subclass); ``probe_input`` is the forgiving one the engine calls at submit/claim time for
routing and ``when:`` conditions — it never raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from mediamill.errors import SHORT_MESSAGE, CorruptMedia, InvalidInput, UnsupportedFormat
from mediamill.media.decoders import plain_reason

#: packets we read looking for a first decodable frame before calling the stream broken
_FIRST_FRAME_PACKETS = 300


@dataclass
class VideoInfo:
    """The first video stream. ``width``/``height`` are as displayed (rotation applied)."""

    codec: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # degrees, as the display matrix says (0, 90, 180, 270)
    fps: float
    pix_fmt: str | None
    bitrate: int | None
    sample_aspect_ratio: float
    frames: int | None
    profile: str | None
    interlaced: bool = False  # the first frame is interlaced: renditions get deinterlaced


@dataclass
class AudioInfo:
    """The first audio stream."""

    codec: str
    sample_rate: int
    channels: int
    layout: str | None
    bitrate: int | None


@dataclass
class AvProbe:
    """A container and its first video and audio streams."""

    format: str
    duration: float
    bitrate: int | None
    size_bytes: int
    video: VideoInfo | None = None
    audio: AudioInfo | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def open_container(path: Path) -> Iterator[Any]:
    """``av.open`` with every demuxer complaint turned into a readable ``InvalidInput``."""
    if path.stat().st_size == 0:
        raise CorruptMedia("the file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise CorruptMedia(f"not a readable media file: {_av_reason(exc)}") from exc
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise UnsupportedFormat(f"cannot open as audio/video: {_av_reason(exc)}") from exc
    try:
        yield container
    finally:
        container.close()


def _av_reason(exc: BaseException) -> str:
    # PyAV messages embed the file path; keep only the library's reason
    return plain_reason(exc)


def probe_av(path: Path, *, first_frame: bool = True) -> AvProbe:
    """Probe an audio or video file; ``first_frame`` also decodes one frame (rotation, decodability)."""
    with open_container(path) as container:
        probe = AvProbe(
            format=container.format.name,
            duration=_duration(container),
            bitrate=container.bit_rate or None,
            size_bytes=path.stat().st_size,
            tags={str(k): str(v) for k, v in (container.metadata or {}).items()},
        )
        video = _main_video_stream(container)
        if video is not None:
            probe.video = _video_info(container, video, first_frame)
        if container.streams.audio:
            probe.audio = _audio_info(container.streams.audio[0])
    return probe


def _main_video_stream(container: Any) -> Any:
    """The first real video stream: cover art in an MP3 or M4A (an attached picture) is not video."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _duration(container: Any) -> float:
    if container.duration:
        return float(container.duration) / 1_000_000
    durations = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
    return max(durations, default=0.0)


def _video_info(container: Any, stream: Any, first_frame: bool) -> VideoInfo:
    ctx = stream.codec_context
    rotation, interlaced = _first_frame_facts(container, stream) if first_frame else (0, False)
    sar = float(stream.sample_aspect_ratio or 1) or 1.0
    width, height = round(ctx.width * sar), ctx.height
    if rotation in (90, 270):
        width, height = height, width
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return VideoInfo(
        codec=_codec_name(ctx), width=width, height=height, coded_width=ctx.width, coded_height=ctx.height,
        rotation=rotation, fps=round(float(rate), 3) if rate else 0.0,
        pix_fmt=ctx.format.name if ctx.format else None, bitrate=ctx.bit_rate or None,
        sample_aspect_ratio=sar, frames=stream.frames or None, profile=ctx.profile or None,
        interlaced=interlaced,
    )


def _first_frame_facts(container: Any, stream: Any) -> tuple[int, bool]:
    """Decode the first frame: proves the stream decodes; reads its rotation and interlacing."""
    for index, packet in enumerate(container.demux(stream)):
        if index >= _FIRST_FRAME_PACKETS:
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            continue  # a broken leading packet; the next keyframe may still decode
        for frame in frames:
            rotation = round(float(getattr(frame, "rotation", 0) or 0)) % 360
            return rotation, bool(getattr(frame, "interlaced_frame", False))
    raise CorruptMedia("the video stream has no decodable frame")


def _audio_info(stream: Any) -> AudioInfo:
    ctx = stream.codec_context
    layout = getattr(ctx, "layout", None)
    return AudioInfo(
        codec=_codec_name(ctx), sample_rate=ctx.sample_rate or 0, channels=ctx.channels or 0,
        layout=layout.name if layout is not None else None, bitrate=ctx.bit_rate or None,
    )


def _codec_name(ctx: Any) -> str:
    # the format's codec ("mp3"), not the decoder that happens to read it ("mp3float")
    codec = getattr(ctx, "codec", None)
    return str(getattr(codec, "canonical_name", None) or ctx.name)


def frame_rate(value: float) -> Fraction:
    """A frame rate as a small fraction (29.97 → 30000/1001)."""
    return Fraction(value).limit_denominator(1001)


# -- forgiving probe for routing ----------------------------------------------------------------
def probe_input(path: Path, mime: str) -> dict[str, Any]:
    """Cheap metadata for routing and ``when:`` conditions; ``{"error": …}`` instead of raising."""
    try:
        if mime.startswith("image/"):
            return _probe_image(path)
        if mime.startswith(("video/", "audio/")):
            return _probe_av_summary(path, mime)
        if mime == "application/pdf" or "wordprocessingml" in mime:
            from mediamill.media.document import document_summary

            return document_summary(path, mime)
        return {"error": f"no prober for {mime}"}
    except InvalidInput as exc:
        return {"error": exc.message}
    except Exception as exc:  # routing must survive anything a hostile file does to a prober
        return {"error": f"{type(exc).__name__}: {exc}"[:SHORT_MESSAGE]}


def _probe_image(path: Path) -> dict[str, Any]:
    from mediamill.media.image import read_header

    return read_header(path).as_dict()


def _probe_av_summary(path: Path, mime: str) -> dict[str, Any]:
    probe = probe_av(path, first_frame=mime.startswith("video/"))
    out: dict[str, Any] = {"duration": round(probe.duration, 3), "format": probe.format,
                           "has_video": probe.video is not None, "has_audio": probe.audio is not None}
    if probe.video:
        v = probe.video
        out.update(width=v.width, height=v.height, fps=v.fps, codec=v.codec, rotation=v.rotation)
    if probe.audio:
        a = probe.audio
        out.update(sample_rate=a.sample_rate, channels=a.channels, audio_codec=a.codec)
        if not probe.video:
            out["codec"] = a.codec
    return out


def is_truncated(path: Path, duration: float, *, tail_s: float = 1.0) -> bool:
    """Whether a file was cut short although its header promises the full length.

    MP4/MOV keep an index of every sample (position, size): if it points past the end of the
    file, data is missing. Containers without a full index get a decode test near the end.
    """
    size = path.stat().st_size
    with open_container(path) as container:
        indexed = False
        for stream in container.streams:
            entries = stream.index_entries
            count = len(entries)
            if count > 1 and stream.type in ("video", "audio"):
                last = entries[count - 1]
                indexed = True
                if last.pos + last.size > size:
                    return True
        if indexed or duration <= tail_s:
            return False
        return not _decodes_near_end(container, duration - tail_s)


def _decodes_near_end(container: Any, min_time: float) -> bool:
    stream = _main_video_stream(container) or (container.streams.audio or [None])[0]
    if stream is None:
        return True
    try:
        container.seek(int(min_time * 1_000_000), backward=True)
        for index, packet in enumerate(container.demux(stream)):
            if index >= _FIRST_FRAME_PACKETS * 4:
                return True  # a long GOP: give up proving it, the transcode will tell
            for frame in packet.decode():
                if frame.time is None or frame.time >= min_time:
                    return True
    except av.error.FFmpegError:
        return False
    return False


#: how far before the end ``last_frame_time`` starts reading packets (seconds)
_TAIL_SECONDS = 10.0


def last_frame_time(path: Path) -> float | None:
    """The presentation time (seconds from the start, as ``ffmpeg -ss`` counts) of the last video frame.

    A frame is shown from its timestamp until the next one, so the last frame of a 1 s clip at
    10 fps starts at 0.9 s and a 10 s slideshow at 1 fps shows its last picture from 9 s: a
    sample time past that has no frame to seek to. Only the tail is read (packets, no decoding);
    None when the file has no video stream or no timestamps.
    """
    with open_container(path) as container:
        stream = _main_video_stream(container)
        if stream is None or stream.time_base is None:
            return None
        start = container.start_time / 1_000_000 if container.start_time else 0.0
        from_time = _duration(container) - _TAIL_SECONDS
        if from_time > 0:
            with contextlib.suppress(av.error.FFmpegError):
                container.seek(int(from_time * 1_000_000), backward=True)
        last: float | None = None
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    t = float(packet.pts * stream.time_base) - start
                    last = t if last is None else max(last, t)
        except av.error.FFmpegError:
            pass  # a damaged tail: the frames before it still count
        return max(0.0, last) if last is not None else None
