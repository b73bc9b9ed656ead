"""Media benchmark: the built-in workflows through the engine vs the best hand-written equivalent.

    .venv/bin/python benchmarks/media.py            # table
    .venv/bin/python benchmarks/media.py --json     # {"rows": [{"case", "engine_s", "baseline_s", "ratio"}, …]}

Cases (targets from issue 4):

- ``image``: WF-IMAGE-PROCESS on a 12 MP JPEG through a warm worker with one slot — submit
  (input copied into storage) to ``job.finished`` — vs the fastest of two hand-written
  single-process pipelines producing the same four files with the same encoder settings
  (Pillow ``draft`` + ``reducing_gap``, and pyvips shrink-on-load). Target ≤ 1.05.
- ``video_vs_fused`` / ``video_vs_separate``: WF-VIDEO-TRANSCODE on a generated 1080p clip; the
  engine figure is the span of the three transcode step executions (first ``started_at`` to
  last ``completed_at``: child hand-off, the fused ffmpeg run, probing the renditions, copying
  them into storage with their sha256, the DB writes) vs one hand-written ffmpeg command with
  ``split`` + ``scale`` and 3 outputs (target ≤ 1.05) and vs three separate ffmpeg commands
  (target ≤ 0.85). Same binary, libx264 veryfast CRF 23, AAC 128k, faststart.
- ``doc``: WF-DOC-PROCESS on a 20-page PDF through a warm worker (submit to ``job.finished``)
  vs the same actions called one after another in this process (warm). Target ≤ 1.5.

Each side runs ``--repeat`` (image), ``--doc-repeat`` (doc) or ``--video-repeat`` (video) times,
interleaved with the other side, and the best run is kept (the machine may be shared).
Generated media are cached in ``--media-dir``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter, ImageOps

from mediamill import telemetry
from mediamill.config import Settings
from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.media.tools import ffmpeg
from mediamill.runtime import Runtime

TARGETS = {"image": 1.05, "video_vs_fused": 1.05, "video_vs_separate": 0.85, "doc": 1.5}
LADDER = ((1920, 1080), (1280, 720), (854, 480))  # what 1080p/720p/480p make of a 1920×1080 source


@dataclass
class Row:
    case: str
    engine_s: float
    baseline_s: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.engine_s / self.baseline_s

    def as_json(self) -> dict[str, Any]:
        return {"case": self.case, "engine_s": round(self.engine_s, 4), "baseline_s": round(self.baseline_s, 4),
                "ratio": round(self.ratio, 3)}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ============================================================================ media
def run_ff(*args: str) -> None:
    subprocess.run([ffmpeg().path, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_photo(path: Path, width: int = 4000, height: int = 3000) -> Path:
    """A 12 MP JPEG that compresses like a photo: smooth gradients, edges and sensor-like noise."""
    if path.exists():
        return path
    r = Image.linear_gradient("L").resize((width, height))
    g = Image.radial_gradient("L").resize((width, height))
    b = Image.linear_gradient("L").rotate(90).resize((width, height))
    base = Image.merge("RGB", (r, g, b))
    noise = Image.effect_noise((width, height), 48).filter(ImageFilter.GaussianBlur(1.2))
    texture = Image.merge("RGB", (noise, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise))
    Image.blend(base, texture, 0.35).save(path, "JPEG", quality=92)
    return path


def make_clip(path: Path, seconds: int) -> Path:
    """1920×1080 30 fps H.264 (~9 Mb/s) + AAC stereo: moving test pattern with light grain."""
    if path.exists():
        return path
    run_ff("-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds},noise=alls=4:allf=t",
           "-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={seconds}",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-ac", "2", "-shortest", str(path))
    return path


def make_pdf(path: Path, pages: int = 20, lines: int = 40) -> Path:
    """A text PDF (Helvetica, ``lines`` lines per page) written by hand, like the tests' writer."""
    if path.exists():
        return path
    n = pages
    font_id = 3 + 2 * n
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{' '.join(f'{3 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>".encode()]
    for p in range(n):
        text = " ".join(f"({f'Page {p + 1}, line {k + 1}: the quick brown fox jumps over the lazy dog.'}) Tj T*"
                        for k in range(lines))
        content = f"BT /F1 11 Tf 14 TL 54 750 Td {text} ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                       f"<< /Font << /F1 {font_id} 0 R >> >> /Contents {4 + 2 * p} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


# ============================================================================ the engine side
class Engine:
    """A prepared runtime and a warm one-slot Worker in this process; jobs timed to ``job.finished``."""

    def __init__(self, data_dir: Path, database_url: str = "") -> None:
        from mediamill.engine.worker import Worker

        self.rt = Runtime(Settings(data_dir=data_dir, database_url=database_url))
        self.rt.prepare()
        self._finished: dict[int, float] = {}
        self._cv = threading.Condition()
        telemetry.on("job.finished", self._on_finished)
        self.worker = Worker(self.rt, pools={"*": 1}, name="bench").start()

    def _on_finished(self, *, job_id: int, **_: Any) -> None:
        now = time.perf_counter()
        with self._cv:
            self._finished[job_id] = now
            self._cv.notify_all()

    def run(self, path: Path, workflow: str, timeout: float = 600) -> tuple[float, dict[str, Any]]:
        """Seconds from storing the input to the job's end, and the job's detail."""
        start = time.perf_counter()
        inp = store_input_file(self.rt.storage, path)
        job = submit_job(self.rt.engine, SubmitRequest(job_input=inp, workflow_code=workflow))
        with self._cv:
            if not self._cv.wait_for(lambda: job.id in self._finished, timeout=timeout):
                raise RuntimeError(f"job {job.id} did not finish within {timeout} s")
            end = self._finished[job.id]
        detail = ops.get_job(self.rt.engine, job.id)
        if detail["status"] not in ("completed", "partial"):
            raise RuntimeError(f"{workflow} job ended {detail['status']}: {detail['error_message']}")
        return end - start, detail

    def close(self) -> None:
        self.worker.stop(grace=30)
        self.rt.close()


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def step_breakdown(detail: dict[str, Any]) -> str:
    """Per-step durations as the engine recorded them (ms)."""
    return ", ".join(f"{s['step_name']} {s['duration_ms']}" for s in detail["steps"] if s["status"] != "skipped")


# ============================================================================ image
def pillow_pipeline(src: Path, out: Path) -> None:
    """validate + resize 2000 (q90) + thumb 300 + JPEG q85 + WebP q80, one decode, DCT-domain shrink."""
    with Image.open(src) as im:
        scale = min(1.0, 2000 / max(im.size))
        # the decoder shrinks by 1/2…1/8 while decoding (and still reads every byte: validation)
        im.draft("RGB", (math.ceil(im.width * scale), math.ceil(im.height * scale)))
        im.load()
        img = ImageOps.exif_transpose(im)
    scale = min(1.0, 2000 / max(img.size))
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS,
                         reducing_gap=3.0)
    img.save(out / "image_2000.jpg", "JPEG", quality=90, progressive=True, optimize=True)
    ts = 300 / max(img.size)
    thumb = img.resize((round(img.width * ts), round(img.height * ts)), Image.Resampling.LANCZOS, reducing_gap=3.0)
    thumb.save(out / "thumbnail_300.jpg", "JPEG", quality=85, progressive=True, optimize=True)
    img.save(out / "image_optimized.jpg", "JPEG", quality=85, progressive=True, optimize=True)
    img.save(out / "image.webp", "WEBP", quality=80, method=4)


def vips_pipeline(src: Path, out: Path) -> None:
    """The same four files with libvips: shrink-on-load, one decode kept in memory."""
    import pyvips

    img = pyvips.Image.thumbnail(str(src), 2000, size="down", fail_on="error").copy_memory()
    img.jpegsave(str(out / "image_2000.jpg"), Q=90, interlace=True, optimize_coding=True, keep="icc")
    img.thumbnail_image(300).jpegsave(str(out / "thumbnail_300.jpg"), Q=85, interlace=True, optimize_coding=True,
                                      keep="icc")
    img.jpegsave(str(out / "image_optimized.jpg"), Q=85, interlace=True, optimize_coding=True, keep="icc")
    img.webpsave(str(out / "image.webp"), Q=80, effort=4, keep="icc")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_image(eng: Engine, photo: Path, work: Path, repeat: int) -> Row:
    eng.run(photo, "WF-IMAGE-PROCESS")  # warm-up: the child has imported and run the image steps once
    baselines: dict[str, Callable[[Path, Path], None]] = {"pillow": pillow_pipeline}
    try:
        import pyvips  # noqa: F401
        baselines["pyvips"] = vips_pipeline
    except ImportError:
        pass
    best = {name: float("inf") for name in baselines}
    engine_best, detail = float("inf"), {}
    for name, fn in baselines.items():  # warm-up of each baseline too
        fn(photo, _fresh(work / name))
    for _ in range(repeat):
        for name, fn in baselines.items():
            out = _fresh(work / name)
            best[name] = min(best[name], timed(lambda fn=fn, out=out: fn(photo, out)))
        seconds, d = eng.run(photo, "WF-IMAGE-PROCESS")
        if seconds < engine_best:
            engine_best, detail = seconds, d
    winner = min(best, key=lambda k: best[k])
    names = {o["name"] for o in detail["outputs"]}
    assert names == {"image_2000.jpg", "thumbnail_300.jpg", "image_optimized.jpg", "image.webp"}, names
    return Row("image", engine_best, best[winner],
               note=f"baseline {winner} ({', '.join(f'{k} {v * 1000:.0f} ms' for k, v in best.items())}); "
                    f"engine steps ms: {step_breakdown(detail)}")


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ============================================================================ video
def _codec_args(out: Path) -> list[str]:
    return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-map", "0:a:0", "-c:a", "aac", "-b:a", "128k",
            "-ac", "2", "-map_metadata", "-1", "-map_chapters", "-1", "-movflags", "+faststart", "-f", "mp4",
            str(out)]


def _scale(w: int, h: int) -> str:
    return f"scale={w}:{h}:flags=bicubic,setsar=1,format=yuv420p"


def fused_ffmpeg(src: Path, out: Path) -> None:
    """One decode, ``split`` into three scalers, three encodes, three files."""
    graph = "[0:v:0]split=3[s0][s1][s2];" + ";".join(f"[s{i}]{_scale(w, h)}[v{i}]" for i, (w, h) in enumerate(LADDER))
    args = ["-i", str(src), "-filter_complex", graph]
    for i, (_w, h) in enumerate(LADDER):
        args += ["-map", f"[v{i}]", *_codec_args(out / f"video_{h}p.mp4")]
    run_ff(*args)


def separate_ffmpeg(src: Path, out: Path) -> None:
    """Three ffmpeg runs, each decoding the source again."""
    for w, h in LADDER:
        run_ff("-i", str(src), "-map", "0:v:0", "-vf", _scale(w, h), *_codec_args(out / f"video_{h}p.mp4"))


def transcode_span(detail: dict[str, Any]) -> float:
    steps = [s for s in detail["steps"] if s["action"] == "transcode_video"]
    assert len(steps) == 3 and all(s["status"] == "completed" for s in steps), steps
    return max(_ts(s["completed_at"]) for s in steps) - min(_ts(s["started_at"]) for s in steps)


def bench_video(eng: Engine, clip: Path, small: Path, work: Path, repeat: int) -> list[Row]:
    eng.run(small, "WF-VIDEO-TRANSCODE")  # warm-up
    fused = separate = engine = float("inf")
    detail: dict[str, Any] = {}
    for i in range(repeat):
        def engine_run() -> None:
            nonlocal engine, detail
            _seconds, d = eng.run(clip, "WF-VIDEO-TRANSCODE")
            if (span := transcode_span(d)) < engine:
                engine, detail = span, d

        def fused_run() -> None:
            nonlocal fused
            fused = min(fused, timed(lambda: fused_ffmpeg(clip, _fresh(work / "fused"))))

        def separate_run() -> None:
            nonlocal separate
            separate = min(separate, timed(lambda: separate_ffmpeg(clip, _fresh(work / "separate"))))

        order = [fused_run, separate_run, engine_run]
        for run in order if i % 2 == 0 else order[::-1]:  # alternate the order against drifting load
            run()
    sizes = [(o["metadata"]["width"], o["metadata"]["height"]) for o in detail["outputs"]
             if o["name"].startswith("video_")]
    assert sorted(sizes) == sorted(LADDER), sizes
    note = f"engine = transcode steps' span; job total {_job_seconds(detail):.2f} s: {step_breakdown(detail)}"
    return [Row("video_vs_fused", engine, fused, note=note),
            Row("video_vs_separate", engine, separate, note="same engine figure")]


def _job_seconds(detail: dict[str, Any]) -> float:
    return _ts(detail["completed_at"]) - _ts(detail["submitted_at"])


# ============================================================================ doc
def doc_in_process(pdf: Path, work: Path) -> None:
    """WF-DOC-PROCESS's actions called directly, in order, on the same file (warm imports)."""
    from mediamill.actions.base import OutputFile, PriorStep, StepContext, get_action, load_actions
    from mediamill.config import MediaLimits

    load_actions()
    previous: list[PriorStep] = []
    limits = MediaLimits()
    for name, action, params in (("Validate Document", "validate_document", {}),
                                 ("Extract Text", "extract_text", {}),
                                 ("Render Thumbnail", "render_thumbnail", {}),
                                 ("Finalize Output", "finalize_job", {})):
        spec = get_action(action)
        assert spec is not None
        step_dir = work / action
        step_dir.mkdir(parents=True, exist_ok=True)
        ctx = StepContext(input_path=pdf, input_mime="application/pdf", work_dir=step_dir,
                          params=spec.validate_params(params), step_name=name, job={"id": 0, "job_code": "BENCH"},
                          previous=list(previous), limits=limits, progress=lambda _p: None, timeout_seconds=60,
                          action=action)
        result = spec.fn(ctx)
        previous.append(PriorStep(name=name, action=action, status="completed", data=result.data,
                                  outputs=[OutputFile(o.name, o.path, o.mime_type, o.metadata)
                                           for o in result.outputs]))


def bench_doc(eng: Engine, pdf: Path, work: Path, repeat: int) -> Row:
    eng.run(pdf, "WF-DOC-PROCESS")  # warm-up
    doc_in_process(pdf, _fresh(work / "doc"))
    baseline = engine = float("inf")
    detail: dict[str, Any] = {}
    for _ in range(repeat):
        baseline = min(baseline, timed(lambda: doc_in_process(pdf, _fresh(work / "doc"))))
        seconds, d = eng.run(pdf, "WF-DOC-PROCESS")
        if seconds < engine:
            engine, detail = seconds, d
    pages = next(o for o in detail["outputs"] if o["name"] == "text.txt")["metadata"]["pages"]
    assert pages == 20, pages
    return Row("doc", engine, baseline, note=f"engine steps ms: {step_breakdown(detail)}")


# ============================================================================ main
def print_table(rows: list[Row]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {os.cpu_count()} CPUs, load average {load} (wall-clock figures; a loaded machine inflates both sides)")
    print(f"{'case':<18} {'engine s':>9} {'baseline s':>11} {'ratio':>7} {'target':>7}  ok")
    for r in rows:
        target = TARGETS[r.case]
        print(f"{r.case:<18} {r.engine_s:>9.3f} {r.baseline_s:>11.3f} {r.ratio:>7.3f} {'≤' + format(target, 'g'):>7}"
              f"  {'yes' if r.ratio <= target else 'NO'}")
    for r in rows:
        if r.note:
            print(f"  {r.case}: {r.note}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help='print {"rows": [...]} only')
    ap.add_argument("--cases", default="image,video,doc", help="comma-separated: image, video, doc")
    ap.add_argument("--repeat", type=int, default=10, help="runs per side for image (the best is kept)")
    ap.add_argument("--doc-repeat", type=int, default=20, help="runs per side for doc (the best is kept)")
    ap.add_argument("--video-repeat", type=int, default=3, help="runs per side for video")
    ap.add_argument("--video-seconds", type=int, default=20, help="length of the generated 1080p clip (20-60)")
    ap.add_argument("--media-dir", type=Path, default=Path(tempfile.gettempdir()) / "mediamill-bench-media")
    ap.add_argument("--database-url", default="", help="default: SQLite in a temporary data dir")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    args.media_dir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mediamill-bench-") as tmp:
        work = Path(tmp) / "work"
        log("preparing media and a warm worker …")
        eng = Engine(Path(tmp) / "data", args.database_url)
        try:
            if "image" in cases:
                log("image …")
                rows.append(bench_image(eng, make_photo(args.media_dir / "photo_12mp.jpg"), work, args.repeat))
            if "video" in cases:
                clip = make_clip(args.media_dir / f"clip_1080p_{args.video_seconds}s_v2.mp4", args.video_seconds)
                small = make_clip(args.media_dir / "clip_1080p_1s_v2.mp4", 1)
                log(f"video ({args.video_seconds} s 1080p; this takes a while) …")
                rows += bench_video(eng, clip, small, work, args.video_repeat)
            if "doc" in cases:
                log("doc …")
                rows.append(bench_doc(eng, make_pdf(args.media_dir / "doc_20_pages.pdf"), work, args.doc_repeat))
        finally:
            eng.close()
    if args.json:
        print(json.dumps({"rows": [r.as_json() for r in rows]}))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
