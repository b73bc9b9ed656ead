"""Content sniffing: a file's type from its bytes, never from its name or a client's claim."""

from __future__ import annotations

import zipfile
from pathlib import Path

import filetype

from mediamill.errors import CorruptMedia, SourceTooLarge, UnsupportedFormat

_HEAD = 8192

# filetype's names → the MIME types workflows speak (rows written by other tools use video/mov, video/avi …)
_ALIASES = {
    "video/quicktime": "video/quicktime",
    "video/x-msvideo": "video/x-msvideo",
    "audio/x-wav": "audio/wav",
    "audio/x-flac": "audio/flac",
    "audio/mpeg": "audio/mpeg",
    "audio/x-aiff": "audio/aiff",
}

# Equivalent names, so a workflow's `input_types: [video/mov]` accepts a sniffed video/quicktime.
EQUIVALENT = {
    "video/mov": "video/quicktime",
    "video/avi": "video/x-msvideo",
    "audio/mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/x-flac": "audio/flac",
    "application/docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "image/jpg": "image/jpeg",
}


def canonical(mime: str) -> str:
    mime = mime.strip().lower()
    return EQUIVALENT.get(mime, mime)


def sniff_bytes(head: bytes) -> str:
    """Best MIME type for the first bytes of a file (application/octet-stream when unknown)."""
    if not head:
        return "application/x-empty"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        # OLE compound file: legacy .doc/.xls, or an encrypted (password-protected) DOCX
        return "application/x-ole-storage"
    kind = filetype.guess(head)
    if kind is not None:
        return str(_ALIASES.get(kind.mime, kind.mime))
    if _looks_like_mp3(head):
        return "audio/mpeg"
    if _looks_like_adts(head):
        return "audio/aac"
    if _looks_like_mpegts(head):
        return "video/mp2t"
    if _looks_like_text(head):
        return "text/plain"
    return "application/octet-stream"


def sniff_file(path: Path) -> str:
    """Sniff a file on disk; tells DOCX apart from other ZIP containers."""
    with path.open("rb") as fh:
        head = fh.read(_HEAD)
    mime = sniff_bytes(head)
    if mime in ("application/zip", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"):
        return _zip_kind(path)
    return mime


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return _damaged_zip_kind(path)
    if "word/document.xml" in names:
        return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    return "application/zip"


def _damaged_zip_kind(path: Path) -> str:
    """A ZIP without its central directory (cut short): judge by the local entry names."""
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if b"[Content_Types].xml" in head and b"word/" in head:
        return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    return "application/zip"


def _looks_like_mp3(head: bytes) -> bool:
    # MPEG audio frame sync (11 set bits) with a valid layer, at the very start
    return len(head) > 4 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0


def _looks_like_adts(head: bytes) -> bool:
    # raw AAC (ADTS): sync word 0xFFF, layer bits 00
    return len(head) > 7 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0


def _looks_like_mpegts(head: bytes) -> bool:
    # 188-byte transport packets, each starting with the 0x47 sync byte
    return len(head) >= 188 * 3 and all(head[i] == 0x47 for i in (0, 188, 376))


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def accepts(input_types: list[str], mime: str) -> bool:
    """Whether a workflow's ``input_types`` (``*/*``, ``video/*`` or exact types) accept a sniffed type."""
    mime = canonical(mime)
    for allowed in input_types:
        allowed = canonical(allowed)
        if allowed in ("*/*", "*", mime):
            return True
        if allowed.endswith("/*") and mime.startswith(allowed[:-1]):
            return True
    return False


def require_kind(path: Path, prefixes: tuple[str, ...], what: str, *, max_bytes: int | None = None) -> str:
    """Sniff ``path`` and refuse it unless its type starts with one of ``prefixes``.

    Returns the sniffed MIME type. A zero-byte file is ``CorruptMedia``, one over
    ``max_bytes`` is ``SourceTooLarge``; anything else that does not match is
    ``UnsupportedFormat`` naming what was found.
    """
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise SourceTooLarge(f"the file is {size:,} bytes; the limit is {max_bytes:,}")
    mime = sniff_file(path)
    if mime == "application/x-empty":
        raise CorruptMedia("the file is empty (0 bytes)")
    if not mime.startswith(prefixes):
        raise UnsupportedFormat(f"expected {what}, but the content is {mime}")
    return mime
