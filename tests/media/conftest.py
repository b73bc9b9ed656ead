"""Media generators for the media tests: every fixture file is made here, never checked in.

Videos and audio come from ffmpeg's lavfi sources, images from Pillow, PDFs from a tiny
hand-written PDF writer (real text objects, so text extraction has something to find), DOCX
from python-docx. Files are made once per session; each test gets a fresh work_dir.
"""

from __future__ import annotations

import io
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mediamill.actions.base import PriorStep, StepContext, get_action
from mediamill.config import MediaLimits
from mediamill.media.tools import ffmpeg

# -- helpers -----------------------------------------------------------------------------------------------


def run_ff(*args: str) -> None:
    """Run ffmpeg quietly; fail the test session loudly if a generator breaks."""
    cmd = [ffmpeg().path, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, timeout=60)


def make_ctx(action: str, input_path: Path, work_dir: Path, params: dict[str, Any] | None = None, *,
             previous: list[PriorStep] | None = None, limits: MediaLimits | None = None,
             timeout: float | None = 60, mime: str = "application/octet-stream",
             progress: Callable[[float], None] | None = None) -> StepContext:
    """A StepContext as the engine would build it, params validated by the action's model."""
    spec = get_action(action)
    assert spec is not None, f"action {action} is not registered"
    work_dir.mkdir(parents=True, exist_ok=True)
    return StepContext(
        input_path=input_path, input_mime=mime, work_dir=work_dir, params=spec.validate_params(params),
        step_name=action, job={"id": "job-1", "job_code": "JOB-1", "priority": 3, "metadata": {"k": "v"}},
        previous=previous or [], limits=limits or MediaLimits(), timeout_seconds=timeout,
        progress=progress or (lambda _pct: None), action=action,
    )


def run_action(action: str, input_path: Path, work_dir: Path, params: dict[str, Any] | None = None,
               **kwargs: Any) -> Any:
    spec = get_action(action)
    assert spec is not None
    return spec.fn(make_ctx(action, input_path, work_dir, params, **kwargs))


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


# -- PDF / DOCX writers --------------------------------------------------------------------------------------


def write_pdf(path: Path, pages: list[str], *, encrypted: bool = False) -> Path:
    """A minimal valid PDF with one line of Helvetica text per page.

    ``encrypted`` adds a Standard security handler whose user password is not empty, so a
    reader must refuse to open it without one (the content itself is not really encrypted).
    """
    objects: list[bytes] = []
    n = len(pages)
    font_id = 3 + 2 * n
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    for i, text in enumerate(pages):
        safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        content = f"BT /F1 24 Tf 72 700 Td ({safe}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                       f"<< /Font << /F1 {font_id} 0 R >> >> /Contents {4 + 2 * i} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    if encrypted:
        objects.append(b"<< /Filter /Standard /V 1 /R 2 /Length 40 /P -4 /O <" + b"11" * 32
                       + b"> /U <" + b"22" * 32 + b"> >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R"
    if encrypted:
        trailer += f" /Encrypt {len(objects)} 0 R /ID [<{'ab' * 16}> <{'ab' * 16}>]"
    out.write(f"trailer\n{trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode())
    path.write_bytes(out.getvalue())
    return path


def write_docx(path: Path, paragraphs: list[str]) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Report", level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    document.save(str(path))
    return path


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width``×``height``: refused before any pixel is decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# -- the media set ------------------------------------------------------------------------------------------------


class Media:
    """Lazily generated, session-wide sample files (each made on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, Path] = {}

    def _once(self, name: str, make: Callable[[Path], Any]) -> Path:
        if name not in self._made:
            path = self.root / name
            make(path)
            self._made[name] = path
        return self._made[name]

    # video
    @property
    def video(self) -> Path:
        """320×180, 3 s, 25 fps H.264 + AAC stereo, faststart."""
        return self._once("clip.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=3",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2",
            "-shortest", "-movflags", "+faststart", str(p)))

    @property
    def video_hd(self) -> Path:
        """640×360, 2 s: big enough for a 360p/240p/144p ladder."""
        return self._once("hd.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=2",
            "-f", "lavfi", "-i", "sine=frequency=300:duration=2",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(p)))

    @property
    def video_rotated(self) -> Path:
        """Stored 320×180 with a 90° display matrix: displayed 180×320."""
        return self._once("rotated.mp4", lambda p: run_ff(
            "-display_rotation", "90", "-i", str(self.video), "-c", "copy", str(p)))

    @property
    def video_odd(self) -> Path:
        """Odd-sized 333×187 (4:4:4 allows odd sizes), no audio."""
        return self._once("odd.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=333x187:rate=25:duration=2",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", str(p)))

    @property
    def video_vfr(self) -> Path:
        """Variable frame rate: frames 20–39 dropped, timestamps kept."""
        return self._once("vfr.mkv", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3",
            "-vf", "select='not(between(n\\,20\\,39))'", "-fps_mode", "vfr",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(p)))

    @property
    def video_anamorphic(self) -> Path:
        """Stored 320×180 with 4:3 pixels: displayed 427×180."""
        return self._once("anamorphic.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=1", "-vf", "setsar=4/3",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(p)))

    @property
    def video_interlaced(self) -> Path:
        """Interlaced H.264 (field-coded), 1 s."""
        return self._once("interlaced.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=50:duration=1", "-vf", "tinterlace=4",
            "-c:v", "libx264", "-preset", "ultrafast", "-flags", "+ildct+ilme", "-x264opts", "interlaced=1",
            "-pix_fmt", "yuv420p", str(p)))

    @property
    def video_noaudio(self) -> Path:
        return self._once("noaudio.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=2",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(p)))

    @property
    def video_scenes(self) -> Path:
        """Three 2 s shots of very different content: cuts at 2 s and 4 s."""
        return self._once("scenes.mp4", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=2",
            "-f", "lavfi", "-i", "color=c=red:size=320x180:rate=25:duration=2",
            "-f", "lavfi", "-i", "smptebars=size=320x180:rate=25:duration=2",
            "-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1:a=0[v]", "-map", "[v]",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(p)))

    @property
    def video_truncated(self) -> Path:
        """A faststart MP4 (index first) cut in half: the index promises data that is gone."""
        return self._once("truncated.mp4", lambda p: truncate(self.video, p, 0.5))

    @property
    def video_truncated_no_index(self) -> Path:
        """A plain MP4 (index last) cut in half: no moov at all."""
        return self._once("truncated_noindex.mp4", lambda p: truncate(self.video_noaudio, p, 0.6))

    # audio
    @property
    def wav(self) -> Path:
        """2.5 s 44.1 kHz mono 16-bit PCM."""
        return self._once("tone.wav", lambda p: run_ff(
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2.5",
            "-c:a", "pcm_s16le", str(p)))

    @property
    def mp3(self) -> Path:
        return self._once("tone.mp3", lambda p: run_ff("-i", str(self.wav), "-c:a", "libmp3lame",
                                                        "-b:a", "128k", str(p)))

    @property
    def m4a(self) -> Path:
        return self._once("tone.m4a", lambda p: run_ff("-i", str(self.wav), "-c:a", "aac", str(p)))

    @property
    def audio_truncated(self) -> Path:
        return self._once("truncated.m4a", lambda p: truncate(self.m4a_plain, p, 0.5))

    @property
    def m4a_plain(self) -> Path:
        return self._once("plain.m4a", lambda p: run_ff(
            "-f", "lavfi", "-i", "sine=frequency=220:duration=3", "-c:a", "aac", str(p)))

    # images
    @property
    def jpeg(self) -> Path:
        """640×360 JPEG with an sRGB ICC profile and EXIF."""
        def make(p: Path) -> None:
            from PIL import ImageCms
            icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
            exif = Image.Exif()
            exif[0x010F] = "TestCam"
            _gradient(640, 360).save(p, "JPEG", quality=90, icc_profile=icc, exif=exif)
        return self._once("photo.jpg", make)

    @property
    def jpeg_exif_rotated(self) -> Path:
        """Stored 640×360 with EXIF orientation 6 (rotate 90° CW): displayed 360×640."""
        def make(p: Path) -> None:
            exif = Image.Exif()
            exif[0x0112] = 6
            _gradient(640, 360).save(p, "JPEG", quality=90, exif=exif)
        return self._once("rotated.jpg", make)

    @property
    def png_alpha(self) -> Path:
        def make(p: Path) -> None:
            im = _gradient(300, 200).convert("RGBA")
            im.putalpha(Image.linear_gradient("L").resize((300, 200)))
            im.save(p, "PNG")
        return self._once("alpha.png", make)

    @property
    def cmyk_jpeg(self) -> Path:
        return self._once("cmyk.jpg", lambda p: _gradient(400, 300).convert("CMYK").save(p, "JPEG"))

    @property
    def png16(self) -> Path:
        """16-bit RGB PNG (48 bits per pixel)."""
        return self._once("deep.png", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=256x144", "-frames:v", "1", "-pix_fmt", "rgb48be", str(p)))

    @property
    def gray16(self) -> Path:
        return self._once("gray16.png", lambda p: run_ff(
            "-f", "lavfi", "-i", "testsrc2=size=256x144", "-frames:v", "1", "-pix_fmt", "gray16be", str(p)))

    @property
    def gif_animated(self) -> Path:
        def make(p: Path) -> None:
            frames = [Image.new("RGB", (120, 80), (i * 60, 255 - i * 60, 0)) for i in range(4)]
            frames[0].save(p, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
        return self._once("anim.gif", make)

    @property
    def big_jpeg(self) -> Path:
        """3000×2000: exercises JPEG draft decoding."""
        return self._once("big.jpg", lambda p: _gradient(3000, 2000).save(p, "JPEG", quality=85))

    @property
    def image_truncated(self) -> Path:
        return self._once("truncated.jpg", lambda p: truncate(self.big_jpeg, p, 0.5))

    @property
    def png_bomb(self) -> Path:
        return self._once("bomb.png", lambda p: png_bomb(p, 50_000, 50_000))

    # documents
    @property
    def pdf(self) -> Path:
        return self._once("doc.pdf", lambda p: write_pdf(p, ["Hello page one", "Second page here",
                                                             "Third and last"]))

    @property
    def pdf_encrypted(self) -> Path:
        return self._once("locked.pdf", lambda p: write_pdf(p, ["secret"], encrypted=True))

    @property
    def pdf_truncated(self) -> Path:
        return self._once("truncated.pdf", lambda p: truncate(self.pdf, p, 0.3))

    @property
    def docx(self) -> Path:
        return self._once("doc.docx", lambda p: write_docx(p, ["First paragraph.", "Second paragraph."]))

    @property
    def docx_truncated(self) -> Path:
        return self._once("truncated.docx", lambda p: truncate(self.docx, p, 0.5))

    # hostile odds and ends
    @property
    def empty(self) -> Path:
        return self._once("empty.bin", lambda p: p.write_bytes(b""))

    @property
    def text_as_mp4(self) -> Path:
        return self._once("notes.mp4", lambda p: p.write_text("this is not a video\n" * 20))

    @property
    def jpeg_as_mp4(self) -> Path:
        return self._once("photo_as.mp4", lambda p: p.write_bytes(self.jpeg.read_bytes()))

    @property
    def random_bytes(self) -> Path:
        return self._once("random.bin", lambda p: p.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(20_000))))


def _gradient(width: int, height: int) -> Image.Image:
    """A colourful test picture (gradients in each channel) that compresses like a photo."""
    r = Image.linear_gradient("L").resize((width, height))
    g = Image.linear_gradient("L").rotate(90).resize((width, height))
    b = Image.radial_gradient("L").resize((width, height))
    return Image.merge("RGB", (r, g, b))


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return Media(tmp_path_factory.mktemp("media"))
