"""Damaged copies of good sample files, made deterministically from their bytes.

Three kinds of damage, the ones real uploads suffer: a file cut short (an interrupted upload),
runs of zeroed bytes (a bad disk, a broken copy) and the right magic at the start followed by
bytes of a different format (a mangled container). Each family also gets its typical structural
damage (a PDF whose page objects are broken, a DOCX whose main part is not XML).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: bytes that start other formats: pasted after a valid header they make a file that promises
#: one thing and holds another
FOREIGN = b"\x89PNG\r\n\x1a\n" + b"GIF89a" + b"%PDF-1.7\n" + b"PK\x03\x04" + b"\x1aE\xdf\xa3" + b"RIFF" * 16


@dataclass(frozen=True)
class Damage:
    """One way of damaging a file: ``name`` for test ids, ``apply`` from good bytes to bad."""

    name: str
    apply: Callable[[bytes], bytes]


def truncated(fraction: float) -> Damage:
    return Damage(f"truncated-{int(fraction * 100)}", lambda b: b[: max(1, int(len(b) * fraction))])


def zeroed(start: float, length: float) -> Damage:
    """Zero ``length`` (a fraction of the size) bytes from ``start`` (a fraction), headers kept."""
    def apply(b: bytes) -> bytes:
        at, n = int(len(b) * start), max(16, int(len(b) * length))
        at = max(at, 16)  # the magic stays: the file still sniffs as what it claims to be
        return b[:at] + b"\x00" * min(n, len(b) - at) + b[at + n:]
    return Damage(f"zeroed-{int(start * 100)}-{int(length * 100)}", apply)


def wrong_magic_after_header(header: int) -> Damage:
    """The first ``header`` bytes kept, everything after replaced by other formats' bytes."""
    def apply(b: bytes) -> bytes:
        body = (FOREIGN * (len(b) // len(FOREIGN) + 1))[: len(b) - header]
        return b[:header] + body
    return Damage(f"foreign-after-{header}", apply)


def replaced(name: str, old: bytes, new: bytes) -> Damage:
    """Every ``old`` replaced by ``new`` (structural damage that keeps the file's size)."""
    def apply(b: bytes) -> bytes:
        assert old in b, f"{name}: {old!r} not in the sample"
        return b.replace(old, new)
    return Damage(name, apply)


def docx_part(name: str, part: str, content: bytes) -> Damage:
    """A DOCX (a ZIP) whose ``part`` is replaced by ``content``: the ZIP is fine, what is inside is not."""
    def apply(b: bytes) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(b)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, content if info.filename == part else src.read(info.filename))
        return out.getvalue()
    return Damage(name, apply)


COMMON = (truncated(0.1), truncated(0.5), truncated(0.9), zeroed(0.05, 0.3), zeroed(0.4, 0.2),
          zeroed(0.6, 0.4), wrong_magic_after_header(16), wrong_magic_after_header(64))

def nth_replaced(name: str, old: bytes, new: bytes, n: int) -> Damage:
    """Only the ``n``-th (1-based) ``old`` replaced by ``new``."""
    def apply(b: bytes) -> bytes:
        at = -1
        for _ in range(n):
            at = b.index(old, at + 1)
        return b[:at] + new + b[at + len(old):]
    return Damage(name, apply)


#: a PDF that opens, but whose page objects are damaged: pdfium fails on the pages
#: ("Failed to get page size by index", "Failed to load page")
PDF_PAGES = (
    replaced("pdf-page-objects", b"/Type /Page /Parent", b"/Type /Pxge /Parent"),
    nth_replaced("pdf-first-page-type", b"/Type /Page /Parent", b"/Type /Pxge /Parent", 1),
    nth_replaced("pdf-last-page-type", b"/Type /Page /Parent", b"/Type /Pxge /Parent", 3),
    replaced("pdf-kids-key", b"/Kids [", b"/Kidz ["),
    replaced("pdf-page-count", b"/Count 3", b"/Count 9"),
    replaced("pdf-kid-reference", b"/Kids [3 0 R", b"/Kids [99 0 R"),
    nth_replaced("pdf-page-dict", b"<< /Type /Page /Parent", b"[[ /Type /Page /Parent", 1),
)
PDF = (
    *COMMON,
    *PDF_PAGES,
    replaced("pdf-mediabox", b"/MediaBox [0 0 612 792]", b"/MediaBox [0 0 612 7x2]"),
    replaced("pdf-no-xref", b"xref", b"xxxx"),
    replaced("pdf-content-streams", b"stream\nBT", b"stream\n\x00\x00"),
)
DOCX = (
    *COMMON,
    docx_part("docx-document-not-xml", "word/document.xml", b"\x00\x01 not xml at all <<<"),
    docx_part("docx-content-types-not-xml", "[Content_Types].xml", b"<Types"),
    docx_part("docx-rels-broken", "_rels/.rels", b"<Relationships xmlns='x'><Relationship Id="),
)
IMAGE = COMMON
VIDEO = COMMON
AUDIO = COMMON


def damaged_copy(good: Path, damage: Damage, dest_dir: Path) -> Path:
    """Write ``good`` damaged by ``damage`` into ``dest_dir`` (same suffix) and return its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"{good.stem}-{damage.name}{good.suffix}"
    out.write_bytes(damage.apply(good.read_bytes()))
    return out
