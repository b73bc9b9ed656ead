"""How two outputs of the same step differ, in terms that mean something for their kind of media.

* images: both sizes, a perceptual hash distance (dHash, 0 = same picture … 64) and SSIM on a small
  grey-scale rendering (1.0 = identical structure);
* video and audio: duration, resolution and bitrate of each, and their differences;
* text (plain, JSON, subtitles): a similarity ratio in 0..1;
* anything else: whether the bytes are equal.

Nothing here raises on a bad file: the comparison says what it could not read.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Any

from PIL import Image

from mediamill.errors import SHORT_MESSAGE

THUMB = 64  # the side of the grey-scale rendering SSIM is computed on
_TEXT_LIMIT = 32 * 1024  # SequenceMatcher is quadratic: compare the head of long texts
_TEXT_TYPES = ("text/", "application/json", "application/x-subrip", "application/xml")


def compare_outputs(a: Path, b: Path, mime_a: str | None, mime_b: str | None) -> dict[str, Any]:
    """Compare output ``a`` (the primary's) with ``b`` (the candidate's)."""
    mime = mime_a or mime_b or ""
    try:
        if mime.startswith("image/"):
            return _images(a, b)
        if mime.startswith(("video/", "audio/")):
            return _av(a, b)
        if mime.startswith(_TEXT_TYPES):
            return _text(a, b)
    except Exception as exc:  # a report must survive any output
        return {"kind": "error", "error": f"{type(exc).__name__}: {exc}"[:SHORT_MESSAGE]}
    return {"kind": "bytes", "identical": _digest(a) == _digest(b)}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ images
def _images(a: Path, b: Path) -> dict[str, Any]:
    with Image.open(a) as ia, Image.open(b) as ib:
        size_a, size_b = ia.size, ib.size
        hash_a, hash_b = dhash(ia), dhash(ib)
        score = ssim(_grey(ia), _grey(ib))
    return {"kind": "image", "primary": {"width": size_a[0], "height": size_a[1]},
            "candidate": {"width": size_b[0], "height": size_b[1]}, "same_dimensions": size_a == size_b,
            "hash_distance": bin(hash_a ^ hash_b).count("1"), "ssim": round(score, 4)}


def dhash(img: Image.Image) -> int:
    """A 64-bit difference hash: is each pixel of a 9×8 grey rendering brighter than its right neighbour?"""
    small = img.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    px = list(small.tobytes())  # one byte per pixel in mode L
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (px[row * 9 + col] > px[row * 9 + col + 1])
    return bits


def _grey(img: Image.Image) -> list[float]:
    return [float(v) for v in img.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR).tobytes()]


def ssim(x: list[float], y: list[float], window: int = 8) -> float:
    """Mean SSIM over non-overlapping windows of two THUMB×THUMB grey images (values 0..255)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for top in range(0, THUMB, window):
        for left in range(0, THUMB, window):
            idx = [(top + r) * THUMB + left + c for r in range(window) for c in range(window)]
            wx, wy = [x[i] for i in idx], [y[i] for i in idx]
            n = len(idx)
            mx, my = sum(wx) / n, sum(wy) / n
            vx = sum((v - mx) ** 2 for v in wx) / (n - 1)
            vy = sum((v - my) ** 2 for v in wy) / (n - 1)
            cov = sum((p - mx) * (q - my) for p, q in zip(wx, wy, strict=True)) / (n - 1)
            scores.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return sum(scores) / len(scores)


# ------------------------------------------------------------------------------ video / audio
def _av_facts(path: Path) -> dict[str, Any]:
    from mediamill.media.probe import probe_av

    p = probe_av(path, first_frame=False)
    facts: dict[str, Any] = {"duration": round(p.duration, 3), "bitrate": p.bitrate}
    if p.video is not None:
        facts.update(width=p.video.width, height=p.video.height, codec=p.video.codec)
    elif p.audio is not None:
        facts.update(codec=p.audio.codec, sample_rate=p.audio.sample_rate, channels=p.audio.channels)
    return facts


def _av(a: Path, b: Path) -> dict[str, Any]:
    fa, fb = _av_facts(a), _av_facts(b)
    same = (fa.get("width"), fa.get("height")) == (fb.get("width"), fb.get("height"))
    out: dict[str, Any] = {"kind": "av", "primary": fa, "candidate": fb,
                           "duration_delta": round(fb["duration"] - fa["duration"], 3), "same_resolution": same}
    if fa.get("bitrate") and fb.get("bitrate"):
        out["bitrate_ratio"] = round(fb["bitrate"] / fa["bitrate"], 3)
    return out


# ------------------------------------------------------------------------------ text
def _text(a: Path, b: Path) -> dict[str, Any]:
    ta = a.read_bytes()[:_TEXT_LIMIT].decode("utf-8", "replace")
    tb = b.read_bytes()[:_TEXT_LIMIT].decode("utf-8", "replace")
    ratio = 1.0 if ta == tb else difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()
    return {"kind": "text", "similarity": round(ratio, 4), "primary_chars": len(ta), "candidate_chars": len(tb)}
