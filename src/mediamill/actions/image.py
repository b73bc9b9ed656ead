"""Image actions: validate, resize, thumbnail, optimize, convert.

Resize, optimize and convert are *chainable*: their output is what the next image step
works on (resize → optimize → convert). Consecutive image steps fuse (key ``image``): the
source is decoded once and each step's in-memory result feeds the next, so a five-step
pipeline pays for one decode instead of four; its outputs are encoded in threads (``_Encodes``), so
the slow WebP encode runs beside the JPEGs on a machine with a core to spare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mediamill.actions.base import OutputFile, StepContext, StepResult, action, register_fuser
from mediamill.actions.fusing import Later, Now, run_with_writes
from mediamill.config import MediaLimits
from mediamill.errors import UnsupportedFormat
from mediamill.media import image as img
from mediamill.media.sniff import require_kind

ImageFormat = Literal["auto", "jpeg", "png", "webp", "avif"]
_ERRORS = ("invalid_input", "internal")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ValidateImageParams(_Params):
    animated: Literal["first_frame", "refuse"] = Field(
        default="first_frame", description="animated GIF/WebP/PNG: use the first frame, or refuse")


class ResizeImageParams(_Params):
    max_dimension: int = Field(default=2000, ge=1, le=30_000, description="longest side, px (never upscales)")
    format: ImageFormat = Field(default="auto", description="auto keeps JPEG/PNG/WebP/AVIF sources' format")
    quality: int | None = Field(default=None, ge=1, le=100)


class CreateThumbnailParams(_Params):
    size: int = Field(default=300, ge=8, le=4096, description="box side, px")
    mode: Literal["fit", "crop"] = Field(default="fit", description="fit inside the box, or fill it and crop")
    format: ImageFormat = Field(default="auto", description="auto: JPEG, or PNG when the image has alpha")
    quality: int | None = Field(default=None, ge=1, le=100)


class OptimizeImageParams(_Params):
    quality: int = Field(default=85, ge=1, le=100)
    progressive: bool = True
    strip_metadata: bool = Field(default=True, description="drop EXIF/XMP; the ICC profile is always kept")
    format: ImageFormat = "auto"


class ConvertFormatParams(_Params):
    format: Literal["webp", "avif", "jpeg", "png"] = "webp"
    quality: int | None = Field(default=None, ge=1, le=100)
    lossless: bool = Field(default=False, description="WebP/AVIF lossless")


# -- where a step reads its pixels -----------------------------------------------------------------
class ImageSource:
    """A file decoded on demand — once per needed scale — or an in-memory image handed over by
    the previous step of a fused run."""

    def __init__(self, path: Path, limits: MediaLimits, decoded: img.Decoded | None = None) -> None:
        self.path = path
        self.limits = limits
        self.hint = 0.0  # a fused run raises this so the first decode serves every step
        self._decoded = decoded
        self._scale = 1.0 if decoded is not None else 0.0
        self._header: img.ImageHeader | None = None

    def header(self) -> img.ImageHeader:
        if self._decoded is not None:
            return self._decoded.header
        if self._header is None:
            self._header = img.read_header(self.path)
        return self._header

    def get(self, scale: float = 1.0) -> img.Decoded:
        """A decode keeping at least ``scale`` of the full size (JPEG decoders shrink while decoding)."""
        if self._decoded is None or self._scale < scale:
            scale = max(scale, self.hint)
            self._decoded = img.decode(self.path, self.limits, scale=scale)
            self._scale = scale
        return self._decoded


@dataclass
class _Done:
    result: StepResult
    chained: img.Decoded | None  # what the next step of a fused run reads, for chainable steps


class _Inline(Now):
    """The encode of a step run alone: written at once, on the step's own thread."""

    def submit(self, ctx: StepContext, decoded: img.Decoded, pixels: img.Pixels, path: Path,
               opts: img.EncodeOptions) -> None:
        self.write(ctx, lambda: img.encode(decoded, pixels, path, opts))


class _Encodes(Later):
    """The encodes of a fused run, each in a thread of its own copy of the pixels (a save changes the image object
    it is called on): the next step computes its pixels meanwhile, and the slow encode (WebP: 60 % of a
    five-step run) runs beside the quick ones instead of after them."""

    def __init__(self) -> None:
        super().__init__("image-encode")

    def submit(self, ctx: StepContext, decoded: img.Decoded, pixels: img.Pixels, path: Path,
               opts: img.EncodeOptions) -> None:
        self.write(ctx, lambda: img.encode(decoded, pixels.copy(), path, opts))


#: Where a step's file gets encoded: at once, or beside the rest of a fused run (its progress reported then)
_Encoder = _Inline | _Encodes


def _write(ctx: StepContext, decoded: img.Decoded, pixels: img.Pixels, stem: str,
           opts: img.EncodeOptions, *, chainable: bool, encodes: _Encoder) -> _Done:
    fmt = opts.format
    path = ctx.work_dir / f"{stem}.{img.FORMAT_EXT[fmt]}"
    encodes.submit(ctx, decoded, pixels, path, opts)
    meta = {"width": pixels.width, "height": pixels.height, "format": fmt,
            "has_alpha": pixels.mode in ("RGBA", "LA") and fmt != "jpeg"}
    if decoded.header.animated:
        meta["animated_source"] = True  # only the first frame was used
    data = {**meta, "chainable": chainable}
    result = StepResult(outputs=[OutputFile(path.name, path, img.FORMAT_MIME[fmt], meta)], data=data)
    chained = None
    if chainable:
        header = replace(decoded.header, width=pixels.width, height=pixels.height, format=fmt,
                         orientation=1, animated=False, frames=1)
        chained = img.Decoded(image=pixels, icc=decoded.icc, source_format=fmt, header=header,
                              exif=decoded.exif)
    return _Done(result, chained)


# -- steps --------------------------------------------------------------------------------------------
def _validate(ctx: StepContext, source: ImageSource, _encodes: _Encoder) -> _Done:
    mime = require_kind(source.path, ("image/",), "an image", max_bytes=ctx.limits.max_input_bytes)
    header = source.header()
    img.check_limits(header, ctx.limits)
    if header.animated and ctx.params.animated == "refuse":
        raise UnsupportedFormat(f"animated image ({header.frames} frames) refused by this workflow")
    # JPEG: decoding at 1/8 still entropy-decodes every byte, so truncation is caught cheaply
    source.get(scale=_need(ctx, header))
    ctx.progress(100.0)
    return _Done(StepResult(data={**header.as_dict(), "mime": mime, "valid": True}), None)


def _need(ctx: StepContext, header: img.ImageHeader) -> float:
    """The fraction of the full size a step must decode to produce its output."""
    p = ctx.params
    if isinstance(p, ValidateImageParams):
        return 0.125 if header.format == "jpeg" else 1.0
    if isinstance(p, ResizeImageParams):
        return img.scale_needed(header, longest=p.max_dimension)
    if isinstance(p, CreateThumbnailParams):
        if p.mode == "fit":
            return img.scale_needed(header, longest=p.size)
        return img.scale_needed(header, shortest=p.size)
    return 1.0


def _resize(ctx: StepContext, source: ImageSource, encodes: _Encoder) -> _Done:
    p: ResizeImageParams = ctx.params
    decoded = source.get(_need(ctx, source.header()))
    pixels = img.resize_fit(decoded.image, p.max_dimension)
    fmt = img.output_format(p.format, decoded)
    return _write(ctx, decoded, pixels, f"image_{p.max_dimension}",
                  img.EncodeOptions(format=fmt, quality=p.quality or (90 if fmt == "jpeg" else None)),
                  chainable=True, encodes=encodes)


def _thumbnail(ctx: StepContext, source: ImageSource, encodes: _Encoder) -> _Done:
    p: CreateThumbnailParams = ctx.params
    decoded = source.get(_need(ctx, source.header()))
    pixels = img.thumbnail(decoded.image, p.size, p.mode)
    fmt = p.format if p.format != "auto" else ("png" if decoded.has_alpha else "jpeg")
    stem = f"thumbnail_{p.size}" + ("_crop" if p.mode == "crop" else "")
    return _write(ctx, decoded, pixels, stem, img.EncodeOptions(format=fmt, quality=p.quality),
                  chainable=False, encodes=encodes)


def _optimize(ctx: StepContext, source: ImageSource, encodes: _Encoder) -> _Done:
    p: OptimizeImageParams = ctx.params
    decoded = source.get()
    fmt = img.output_format(p.format, decoded)
    opts = img.EncodeOptions(format=fmt, quality=p.quality, progressive=p.progressive,
                             keep_exif=not p.strip_metadata, effort=9 if fmt == "png" else 6)
    return _write(ctx, decoded, decoded.image, "image_optimized", opts, chainable=True, encodes=encodes)


def _convert(ctx: StepContext, source: ImageSource, encodes: _Encoder) -> _Done:
    p: ConvertFormatParams = ctx.params
    decoded = source.get()
    opts = img.EncodeOptions(format=p.format, quality=p.quality, lossless=p.lossless)
    return _write(ctx, decoded, decoded.image, "image", opts, chainable=True, encodes=encodes)


_Step = Callable[[StepContext, ImageSource, _Encoder], _Done]
_STEPS: dict[type[BaseModel], _Step] = {
    ValidateImageParams: _validate, ResizeImageParams: _resize, CreateThumbnailParams: _thumbnail,
    OptimizeImageParams: _optimize, ConvertFormatParams: _convert,
}


def _source_path(ctx: StepContext) -> Path:
    if isinstance(ctx.params, ValidateImageParams):
        return ctx.input_path  # validation is about the upload, never an intermediate
    return ctx.source_path("image/")[0]


_CHAINABLE = (ResizeImageParams, OptimizeImageParams, ConvertFormatParams)


def _run_alone(ctx: StepContext) -> StepResult:
    return _STEPS[type(ctx.params)](ctx, ImageSource(_source_path(ctx), ctx.limits), _Inline()).result


@register_fuser("image")
def fuse_image_steps(ctxs: Sequence[StepContext]) -> list[StepResult]:
    """Run consecutive image steps on one decode; a chainable step's pixels feed the next step.

    The file is decoded once, at the largest scale any step before the first chainable one
    needs (a JPEG then shrinks inside its decoder); later steps read the previous result.
    """
    return run_with_writes(_Encodes(), lambda encodes: _fuse(ctxs, encodes))


def _fuse(ctxs: Sequence[StepContext], encodes: _Encodes) -> list[StepResult]:
    results: list[StepResult] = []
    files: dict[Path, ImageSource] = {}
    chained: img.Decoded | None = None
    for index, ctx in enumerate(ctxs):
        if chained is not None and not isinstance(ctx.params, ValidateImageParams):
            source = ImageSource(ctx.work_dir / "chained", ctx.limits, chained)
        else:
            path = _source_path(ctx)
            if path not in files:
                files[path] = ImageSource(path, ctx.limits)
                files[path].hint = _shared_need(ctxs[index:], files[path])
            source = files[path]
        done = _STEPS[type(ctx.params)](ctx, source, encodes)
        chained = done.chained or chained
        results.append(done.result)
    return results


def _shared_need(ctxs: Sequence[StepContext], source: ImageSource) -> float:
    """Largest decode scale needed by the steps that will read ``source`` directly."""
    header = source.header()
    need = 0.0
    for ctx in ctxs:
        need = max(need, _need(ctx, header))
        if type(ctx.params) in _CHAINABLE:
            break
    return need


# -- registration ---------------------------------------------------------------------------------------
@action("validate_image", params=ValidateImageParams, family="image", errors=_ERRORS, fuse="image")
def validate_image(ctx: StepContext) -> StepResult:
    """Check an image is what its bytes say, within the pixel limits, and fully decodable."""
    return _run_alone(ctx)


@action("resize_image", params=ResizeImageParams, family="image", errors=_ERRORS, fuse="image")
def resize_image(ctx: StepContext) -> StepResult:
    """Shrink so the longest side is at most `max_dimension` (EXIF orientation applied)."""
    return _run_alone(ctx)


@action("create_thumbnail", params=CreateThumbnailParams, family="image", errors=_ERRORS, fuse="image")
def create_thumbnail(ctx: StepContext) -> StepResult:
    """A `size` px thumbnail, fitted inside the box or centre-cropped to fill it."""
    return _run_alone(ctx)


@action("optimize_image", params=OptimizeImageParams, family="image", errors=_ERRORS, fuse="image")
def optimize_image(ctx: StepContext) -> StepResult:
    """Re-encode for the web: quality, progressive JPEG, metadata stripped but ICC kept."""
    return _run_alone(ctx)


@action("convert_format", params=ConvertFormatParams, family="image", errors=_ERRORS, fuse="image")
def convert_format(ctx: StepContext) -> StepResult:
    """Convert to WebP, AVIF, JPEG or PNG."""
    return _run_alone(ctx)
