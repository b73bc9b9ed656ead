"""Decoder failures on an input are the input's fault: ``CorruptMedia`` with a plain message.

pdfium, python-docx (ZIP + lxml), PyAV/ffmpeg, Pillow and libvips each raise their own
exceptions when the bytes they read are damaged. Wherever an action reads its INPUT, those
exceptions are turned into ``CorruptMedia`` (class ``invalid_input``: never retried, never
counted against a circuit breaker). Only input reading is wrapped: the same exception while
writing an output or from a wrong call of ours stays ``internal``, because that is our bug.

Messages are public (the job's error is shown to clients), so library text is reduced to its
reason: no file paths, memory addresses, errno numbers or ffmpeg's ``[muxer @ 0x…]`` prefixes.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from mediamill.errors import CorruptMedia, MediamillError

_FFMPEG_PREFIX = re.compile(r"\[[^\]]*@ ?0x[0-9a-f]+\]\s*|\[(?:in|out|vist|aost|dec|enc)[^\]]*\]\s*", re.I)
_ADDRESS = re.compile(r"\b0x[0-9a-f]{6,}\b", re.I)
_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")
# a quoted path, or an unquoted absolute path of two or more components
_QUOTED_PATH = re.compile(r"""(["'])(?:[A-Za-z]:)?[/\\][^"'\n]*\1""")
_BARE_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)+[\w.@+-]*")
_SENTENCE_START = re.compile(r"[A-Z][a-z]+(?:[\s,.]|$)")
_CALL = re.compile(r":\s*'?\w+\(\)'?$")


def scrub_paths(text: str) -> str:
    """``text`` with file paths replaced by ``<file>`` (server paths never reach a client)."""
    return _BARE_PATH.sub("<file>", _QUOTED_PATH.sub("<file>", text))


def plain_reason(error: BaseException | str, *, limit: int = 200) -> str:
    """A library's complaint reduced to a plain, public reason."""
    text = str(error)
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror  # PyAV and the OS put the path in ``filename``; the reason is here
    text = _ERRNO.sub("", _FFMPEG_PREFIX.sub("", text))
    text = _CALL.sub("", scrub_paths(text.strip().splitlines()[0] if text.strip() else ""))
    text = re.sub(r":\s*<file>\W*$", "", _ADDRESS.sub("", text)).replace("<file>", "the file").strip(" :.'\"\t")
    text = re.sub(r"\s+", " ", text).strip(" :")
    if not text:
        return "unreadable data"
    if _SENTENCE_START.match(text):  # "Invalid data found" reads as "invalid data found" in parentheses
        text = text[0].lower() + text[1:]
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@lru_cache(maxsize=1)
def decoder_errors() -> tuple[type[BaseException], ...]:
    """The exception types the media libraries raise on damaged data (imported lazily)."""
    import av
    import pypdfium2 as pdfium
    import pyvips
    from docx.opc.exceptions import PackageNotFoundError
    from lxml import etree
    from PIL import UnidentifiedImageError

    return (pdfium.PdfiumError, zipfile.BadZipFile, PackageNotFoundError, etree.LxmlError,
            av.error.FFmpegError, UnidentifiedImageError, pyvips.Error,
            EOFError, struct.error, zlib.error, SyntaxError, UnicodeDecodeError)


@contextmanager
def reading_input(what: str) -> Iterator[None]:
    """Around code that reads the input: a decoder's exception becomes ``CorruptMedia``.

    ``what`` names the input in the message ("the PDF", "the DOCX", "the image" …).
    Errors that are already classified pass through unchanged.
    """
    try:
        yield
    except MediamillError:
        raise
    except decoder_errors() as exc:
        raise CorruptMedia(f"{what} is damaged and cannot be read ({plain_reason(exc)})") from exc
