"""Image actions: orientation, colour, depth, alpha, animation, bombs, and fusion."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from mediamill.actions.base import OutputFile, PriorStep, get_fuser
from mediamill.config import MediaLimits
from mediamill.errors import CorruptMedia, InvalidInput, SourceTooLarge, UnsupportedFormat

from .conftest import make_ctx, run_action
from .probers import probe_image


def test_validate_image(media, tmp_path):
    d = run_action("validate_image", media.jpeg, tmp_path).data
    assert (d["format"], d["width"], d["height"], d["mime"], d["has_icc"]) == ("jpeg", 640, 360, "image/jpeg", True)


def test_validate_reports_exif_rotated_size(media, tmp_path):
    d = run_action("validate_image", media.jpeg_exif_rotated, tmp_path).data
    assert (d["width"], d["height"], d["orientation"]) == (360, 640, 6)


@pytest.mark.parametrize("name, error", [
    ("image_truncated", CorruptMedia), ("empty", CorruptMedia), ("png_bomb", SourceTooLarge),
    ("text_as_mp4", UnsupportedFormat), ("video", UnsupportedFormat), ("random_bytes", UnsupportedFormat),
])
def test_validate_image_refuses_bad_input(media, tmp_path, name, error):
    start = time.monotonic()
    with pytest.raises(error) as info:
        run_action("validate_image", getattr(media, name), tmp_path)
    assert isinstance(info.value, InvalidInput) and str(media.root) not in info.value.message
    assert time.monotonic() - start < 3


def test_pixel_limit_from_config(media, tmp_path):
    with pytest.raises(SourceTooLarge, match="pixels"):
        run_action("validate_image", media.jpeg, tmp_path, limits=MediaLimits(max_pixels=100_000))


def test_animated_first_frame_or_refused(media, tmp_path):
    d = run_action("validate_image", media.gif_animated, tmp_path).data
    assert d["animated"] is True and d["frames"] == 4
    with pytest.raises(UnsupportedFormat, match="animated"):
        run_action("validate_image", media.gif_animated, tmp_path, {"animated": "refuse"})
    [out] = run_action("convert_format", media.gif_animated, tmp_path, {"format": "png"}).outputs
    assert probe_image(out.path)[:3] == ("png", 120, 80) and out.metadata["animated_source"] is True


def test_resize_jpeg_keeps_format_and_icc(media, tmp_path):
    result = run_action("resize_image", media.big_jpeg, tmp_path, {"max_dimension": 1000})
    [out] = result.outputs
    assert out.name == "image_1000.jpg" and result.data["chainable"] is True
    assert probe_image(out.path)[:3] == ("jpeg", 1000, 667)


def test_resize_never_upscales(media, tmp_path):
    [out] = run_action("resize_image", media.jpeg, tmp_path, {"max_dimension": 4000}).outputs
    assert probe_image(out.path)[1:3] == (640, 360)
    with Image.open(out.path) as im:
        assert im.info.get("icc_profile")  # ICC kept
        assert 0x010F not in im.getexif()  # other metadata stripped


def test_exif_orientation_applied(media, tmp_path):
    [out] = run_action("resize_image", media.jpeg_exif_rotated, tmp_path, {"max_dimension": 320}).outputs
    assert probe_image(out.path)[1:3] == (180, 320)
    with Image.open(out.path) as im:
        assert im.getexif().get(0x0112, 1) == 1


def test_cmyk_becomes_srgb(media, tmp_path):
    [out] = run_action("convert_format", media.cmyk_jpeg, tmp_path, {"format": "jpeg"}).outputs
    assert probe_image(out.path) == ("jpeg", 400, 300, "RGB")


@pytest.mark.parametrize("name", ["png16", "gray16"])
def test_16_bit_is_reduced_not_clipped(media, tmp_path, name):
    [out] = run_action("convert_format", getattr(media, name), tmp_path, {"format": "png"}).outputs
    with Image.open(out.path) as im:
        assert im.size == (256, 144) and im.mode in ("RGB", "L")
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # a clipped conversion would be flat white


def test_alpha_kept_in_png_webp_and_flattened_in_jpeg(media, tmp_path):
    [png] = run_action("create_thumbnail", media.png_alpha, tmp_path / "a", {"size": 100}).outputs
    assert probe_image(png.path) == ("png", 100, 67, "RGBA")
    [webp] = run_action("convert_format", media.png_alpha, tmp_path / "b", {"format": "webp"}).outputs
    assert probe_image(webp.path)[3] == "RGBA"
    [jpg] = run_action("convert_format", media.png_alpha, tmp_path / "c", {"format": "jpeg"}).outputs
    assert probe_image(jpg.path) == ("jpeg", 300, 200, "RGB")


def test_thumbnail_fit_and_crop(media, tmp_path):
    [fit] = run_action("create_thumbnail", media.jpeg, tmp_path / "fit", {"size": 300}).outputs
    assert fit.name == "thumbnail_300.jpg" and probe_image(fit.path)[1:3] == (300, 169)
    [crop] = run_action("create_thumbnail", media.jpeg, tmp_path / "crop", {"size": 300, "mode": "crop"}).outputs
    assert crop.name == "thumbnail_300_crop.jpg" and probe_image(crop.path)[1:3] == (300, 300)


def test_optimize_progressive_jpeg(media, tmp_path):
    [out] = run_action("optimize_image", media.jpeg, tmp_path, {"quality": 70}).outputs
    with Image.open(out.path) as im:
        assert im.format == "JPEG" and im.info.get("progressive") and im.info.get("icc_profile")


@pytest.mark.parametrize("fmt, mime", [("webp", "image/webp"), ("avif", "image/avif"), ("png", "image/png"),
                                       ("jpeg", "image/jpeg")])
def test_convert_formats(media, tmp_path, fmt, mime):
    [out] = run_action("convert_format", media.jpeg, tmp_path, {"format": fmt}).outputs
    assert out.mime_type == mime and probe_image(out.path)[:3] == (fmt, 640, 360)


def _pipeline_params():
    return [("validate_image", {}), ("resize_image", {"max_dimension": 2000}),
            ("create_thumbnail", {"size": 300}), ("optimize_image", {"quality": 85}),
            ("convert_format", {"format": "webp"})]


def _run_sequentially(input_path, root):
    previous: list[PriorStep] = []
    for action, params in _pipeline_params():
        ctx = make_ctx(action, input_path, root / action, params, previous=list(previous))
        from mediamill.actions.base import get_action
        result = get_action(action).fn(ctx)
        previous.append(PriorStep(action, action, "completed", result.data, result.outputs))
    return previous


def test_fused_pipeline_matches_sequential(media, tmp_path):
    sequential = _run_sequentially(media.big_jpeg, tmp_path / "seq")
    ctxs = [make_ctx(a, media.big_jpeg, tmp_path / "fused" / a, p) for a, p in _pipeline_params()]
    fused = get_fuser("image")(ctxs)
    assert len(fused) == 5
    for prior, result in zip(sequential, fused, strict=True):
        assert [o.name for o in prior.outputs] == [o.name for o in result.outputs]
        for a, b in zip(prior.outputs, result.outputs, strict=True):
            assert probe_image(a.path) == probe_image(b.path)
            assert a.mime_type == b.mime_type
    assert probe_image(fused[1].outputs[0].path)[1:3] == (2000, 1333)
    assert probe_image(fused[2].outputs[0].path)[1:3] == (300, 200)
    assert probe_image(fused[4].outputs[0].path)[:3] == ("webp", 2000, 1333)


def test_fused_encodes_run_beside_each_other(media, tmp_path, monkeypatch):
    """The WebP encode (the slow one) starts while the first JPEG's is still running: the first JPEG encode
    waits for it, which run one after another would never see. Each step reaches 100 % once its file is
    written, and the files are those of the same fused run encoding one file after another, byte for byte."""
    from mediamill.actions import image as image_actions

    with monkeypatch.context() as m:  # the same run, each encode in its turn on the run's own thread
        m.setattr(image_actions._Encodes, "submit",
                  lambda self, ctx, decoded, pixels, path, opts: image_actions.img.encode(decoded, pixels, path, opts))
        one_by_one = get_fuser("image")([make_ctx(a, media.big_jpeg, tmp_path / "seq" / a, p)
                                         for a, p in _pipeline_params()])
    webp_started, real = threading.Event(), image_actions.img.encode
    progress: list[tuple[str, float, bool]] = []

    def encode(decoded, pixels, path, opts):
        if opts.format == "webp":
            webp_started.set()
        elif path.name == "image_2000.jpg":
            assert webp_started.wait(30), "the WebP encode did not start while the first JPEG encode ran"
        real(decoded, pixels, path, opts)

    monkeypatch.setattr(image_actions.img, "encode", encode)
    ctxs = [make_ctx(a, media.big_jpeg, tmp_path / "fused" / a, p,
                     progress=lambda pct, a=a: progress.append((a, pct, threading.current_thread() is main)))
            for a, p in _pipeline_params()]
    main = threading.current_thread()
    fused = get_fuser("image")(ctxs)
    assert webp_started.is_set()
    for before, result in zip(one_by_one, fused, strict=True):
        for a, b in zip(before.outputs, result.outputs, strict=True):
            assert a.name == b.name and a.path.read_bytes() == b.path.read_bytes(), (a.name, b.name)
    # every step 100 % (from the run's own thread: the child's pipe to the worker is not shared between threads)
    assert sorted(a for a, pct, _ in progress if pct == 100.0) == sorted(a for a, _ in _pipeline_params())
    assert all(on_main for _, _, on_main in progress)
    assert not [t for t in threading.enumerate() if t.name.startswith("image-encode")]


def test_a_failed_fused_encode_fails_the_run_and_leaves_no_thread(media, tmp_path, monkeypatch):
    from mediamill.actions import image as image_actions

    real = image_actions.img.encode

    def encode(decoded, pixels, path, opts):
        if opts.format == "webp":
            raise OSError(28, "No space left on device")
        real(decoded, pixels, path, opts)

    monkeypatch.setattr(image_actions.img, "encode", encode)
    ctxs = [make_ctx(a, media.big_jpeg, tmp_path / a, p) for a, p in _pipeline_params()]
    with pytest.raises(OSError, match="No space left"):
        get_fuser("image")(ctxs)
    assert not [t for t in threading.enumerate() if t.name.startswith("image-encode")]


def test_chain_uses_previous_output(media, tmp_path):
    first = run_action("resize_image", media.big_jpeg, tmp_path / "r", {"max_dimension": 500})
    prior = PriorStep("Resize", "resize_image", "completed", first.data, first.outputs)
    [out] = run_action("convert_format", media.big_jpeg, tmp_path / "c", {"format": "webp"},
                       previous=[prior]).outputs
    assert probe_image(out.path)[1:3] == (500, 333)


def test_libvips_fallback_decoder(media, tmp_path):
    # formats Pillow cannot open (HEIC) go through libvips: exercise that path on a 16-bit PNG
    from mediamill.media.image import _vips_decode

    decoded = _vips_decode(media.png16, MediaLimits())
    assert decoded.image.size == (256, 144) and decoded.image.mode == "RGB"
    with pytest.raises(SourceTooLarge):
        _vips_decode(media.png16, MediaLimits(max_pixels=1000))


def test_output_file_names_are_unique_per_step(media, tmp_path):
    names = set()
    for action, params in _pipeline_params()[1:]:
        result = run_action(action, media.jpeg, tmp_path / action, params)
        names.update(o.name for o in result.outputs if isinstance(o, OutputFile))
    assert len(names) == 4
