"""Output checks with a prober (PyAV, Pillow, pdfium), never byte comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
from PIL import Image


def probe_video(path: Path) -> dict[str, Any]:
    """Displayed size, duration, codecs of a video file."""
    with av.open(str(path)) as c:
        out: dict[str, Any] = {"format": c.format.name, "duration": (c.duration or 0) / 1e6}
        if c.streams.video:
            s = c.streams.video[0]
            out.update(width=s.codec_context.width, height=s.codec_context.height,
                       codec=s.codec_context.codec.canonical_name, pix_fmt=s.codec_context.format.name)
            frame = next(c.decode(s))
            out["rotation"] = frame.rotation
        if c.streams.audio:
            a = c.streams.audio[0]
            out.update(audio_codec=a.codec_context.codec.canonical_name, sample_rate=a.codec_context.sample_rate,
                       channels=a.codec_context.channels)
    return out


def mp4_faststart(path: Path) -> bool:
    """moov (the index) before mdat (the data): playback can start before the download ends."""
    data = path.read_bytes()
    pos, order = 0, []
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8].decode("latin-1")
        order.append(kind)
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if size < 8:
            break
        pos += size
    return "moov" in order and "mdat" in order and order.index("moov") < order.index("mdat")


def probe_image(path: Path) -> tuple[str, int, int, str]:
    with Image.open(path) as im:
        return (im.format or "").lower(), im.width, im.height, im.mode
