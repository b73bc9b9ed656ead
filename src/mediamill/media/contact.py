"""Contact sheets: frames laid out in a grid, each stamped with its time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

_GAP = 4
_BACKGROUND = (16, 16, 16)


def _stamp(draw: ImageDraw.ImageDraw, x: int, y: int, seconds: float) -> None:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    label = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    draw.rectangle((x, y, x + right - left + 6, y + bottom - top + 6), fill=(0, 0, 0))
    draw.text((x + 3 - left, y + 3 - top), label, fill=(255, 255, 255), font=font)


def compose_sheet(frames: Sequence[tuple[float, Path]], out: Path, *, columns: int, fmt: str,
                  quality: int = 85, timestamps: bool = True) -> tuple[int, int]:
    """Lay ``(time, image)`` frames out ``columns`` wide; returns the sheet's size."""
    tiles = [Image.open(path).convert("RGB") for _, path in frames]
    tile_w = max(t.width for t in tiles)
    tile_h = max(t.height for t in tiles)
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (tile_w + _GAP) + _GAP, rows * (tile_h + _GAP) + _GAP), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, ((t, _), tile) in enumerate(zip(frames, tiles, strict=True)):
        x = _GAP + (i % columns) * (tile_w + _GAP)
        y = _GAP + (i // columns) * (tile_h + _GAP)
        sheet.paste(tile, (x, y))
        if timestamps:
            _stamp(draw, x + 2, y + 2, t)
    options = {"quality": quality} if fmt in ("jpeg", "webp") else {}
    sheet.save(out, format=fmt.upper(), **options)
    return sheet.size
