"""An ``add_watermark`` step: stamps a text label in a corner of an image.

Everything a custom action needs is here:

- a pydantic params model with ``extra="forbid"`` — mediamill validates a workflow's
  ``params:`` against it when the workflow is saved, so typos fail early;
- ``@action(name, params=..., family=..., errors=...)`` registers the function;
- the function reads ``ctx.source_path("image/")`` (the previous chainable image step's
  output, else the job's input), writes into ``ctx.work_dir``, reports ``ctx.progress`` and
  returns a ``StepResult``;
- failures raise mediamill errors so the engine knows the class: ``InvalidInput`` is never
  retried, anything unexpected is ``internal``.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from mediamill.actions import OutputFile, StepContext, StepResult, action
from mediamill.errors import InvalidInput


class WatermarkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(default="© mediamill", min_length=1, max_length=200)
    corner: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = "bottom-right"
    opacity: float = Field(default=0.6, ge=0, le=1)


def _position(corner: str, size: tuple[int, int], box: tuple[int, int], margin: int = 10) -> tuple[int, int]:
    x = margin if corner.endswith("left") else size[0] - box[0] - margin
    y = margin if corner.startswith("top") else size[1] - box[1] - margin
    return max(0, x), max(0, y)


@action("add_watermark", params=WatermarkParams, family="image", errors=("invalid_input", "internal"))
def add_watermark(ctx: StepContext) -> StepResult:
    """Stamp `text` in a corner of the image (PNG output, chainable)."""
    source, _mime = ctx.source_path("image/")
    try:
        image = Image.open(source).convert("RGBA")
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInput(f"add_watermark needs an image: {exc}") from exc
    ctx.progress(30.0)
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), ctx.params.text, font=font)
    x, y = _position(ctx.params.corner, image.size, (right - left, bottom - top))
    draw.text((x - left, y - top), ctx.params.text, font=font,
              fill=(255, 255, 255, round(255 * ctx.params.opacity)))
    out = ctx.work_dir / "watermarked.png"
    Image.alpha_composite(image, layer).save(out, "PNG")
    ctx.progress(100.0)
    meta = {"width": image.width, "height": image.height, "text": ctx.params.text}
    # chainable: a following image step (optimize, convert …) works on the watermarked picture
    return StepResult(outputs=[OutputFile(out.name, out, "image/png", meta)], data={**meta, "chainable": True})
