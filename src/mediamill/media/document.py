"""Documents: PDF with pdfium (open, text per page, render), DOCX with python-docx, LibreOffice.

Hostile documents: a PDF that pdfium cannot open is ``CorruptMedia``; one that needs a
password is ``UnsupportedFormat`` (we never guess passwords); a DOCX is a ZIP, so its
uncompressed size and compression ratio are checked before python-docx inflates anything.
Password-protected Office files are not ZIPs at all but OLE containers, refused by type.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
from PIL import Image

from mediamill.config import MediaLimits
from mediamill.errors import CorruptMedia, SourceTooLarge, StepTimeout, ToolFailed, Unavailable, UnsupportedFormat
from mediamill.media.decoders import reading_input
from mediamill.media.tools import soffice_path

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
OLE = "application/x-ole-storage"


# -- PDF -----------------------------------------------------------------------------------------------
@contextmanager
def open_pdf(path: Path) -> Iterator[pdfium.PdfDocument]:
    """Open a PDF; encrypted and malformed files become readable ``InvalidInput`` errors."""
    if path.stat().st_size == 0:
        raise CorruptMedia("the file is empty (0 bytes)")
    try:
        doc = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        if exc.err_code in (pdfium_raw.FPDF_ERR_PASSWORD, pdfium_raw.FPDF_ERR_SECURITY):
            raise UnsupportedFormat("the PDF is encrypted (password protected)") from exc
        raise CorruptMedia("the PDF is malformed and cannot be opened") from exc
    try:
        with reading_input("the PDF"):  # pdfium's complaints about the open document: damaged objects
            yield doc
    finally:
        doc.close()


def check_pages(count: int, limits: MediaLimits) -> None:
    if count <= 0:
        raise CorruptMedia("the PDF has no pages")
    if count > limits.max_document_pages:
        raise SourceTooLarge(f"the document has {count} pages; the limit is {limits.max_document_pages}")


def load_page(doc: pdfium.PdfDocument, index: int) -> pdfium.PdfPage:
    """Page ``index`` (0-based); a page whose objects are damaged is ``CorruptMedia``.

    An index out of range is our bug, not the file's, and stays an ``IndexError``.
    """
    if not 0 <= index < len(doc):
        raise IndexError(f"page index {index} out of range for a {len(doc)}-page PDF")
    try:
        return doc[index]
    except pdfium.PdfiumError as exc:
        raise CorruptMedia(f"page {index + 1} of the PDF is damaged and cannot be read") from exc


def pdf_info(doc: pdfium.PdfDocument) -> dict[str, Any]:
    """Page count, first page size (points), PDF version and the document's metadata."""
    meta = {k: v for k, v in doc.get_metadata_dict(skip_empty=True).items()}
    try:
        width, height = doc.get_page_size(0) if len(doc) else (0.0, 0.0)
    except pdfium.PdfiumError as exc:
        raise CorruptMedia("page 1 of the PDF is damaged (its size cannot be read)") from exc
    return {"pages": len(doc), "page_width_pt": round(width, 1), "page_height_pt": round(height, 1),
            "pdf_version": doc.get_version(), "metadata": meta}


def pdf_page_texts(doc: pdfium.PdfDocument) -> Iterator[str]:
    """Text of each page, in order."""
    for index in range(len(doc)):
        page = load_page(doc, index)
        try:
            textpage = page.get_textpage()
            try:
                yield textpage.get_text_range().replace("\r\n", "\n")
            finally:
                textpage.close()
        except pdfium.PdfiumError as exc:
            raise CorruptMedia(f"page {index + 1} of the PDF cannot be read") from exc
        finally:
            page.close()


def render_page(doc: pdfium.PdfDocument, index: int, width: int) -> Image.Image:
    """Page ``index`` (0-based) rendered ``width`` px wide on white."""
    page = load_page(doc, index)
    try:
        page_width, _ = page.get_size()
        scale = max(0.05, min(width / max(page_width, 1.0), 8.0))  # 8× = 576 dpi, plenty
        bitmap = page.render(scale=scale, may_draw_forms=True)
        image: Image.Image = bitmap.to_pil().convert("RGB")
        bitmap.close()
        return image
    except pdfium.PdfiumError as exc:
        raise CorruptMedia(f"page {index + 1} of the PDF cannot be rendered") from exc
    finally:
        page.close()


# -- DOCX ----------------------------------------------------------------------------------------------
def check_zip(path: Path, limits: MediaLimits) -> None:
    """Refuse ZIP bombs and broken archives before anything is inflated."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptMedia("the document is not a readable ZIP package (truncated or damaged)") from exc
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    if total > limits.max_archive_uncompressed_bytes:
        raise SourceTooLarge(f"the document inflates to {total:,} bytes; the limit is "
                             f"{limits.max_archive_uncompressed_bytes:,}")
    if total / packed > limits.max_archive_ratio:
        raise SourceTooLarge(f"the document's compression ratio {total / packed:.0f}:1 looks like a ZIP bomb")


_DOCX_FAULTS: dict[type[BaseException], str] = {
    zipfile.BadZipFile: "its ZIP package is damaged", KeyError: "a part it needs is missing",
    ValueError: "a part has an invalid value", OSError: "its data cannot be read",
}


def open_docx(path: Path, limits: MediaLimits) -> Any:
    """A python-docx Document, after the ZIP checks."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    check_zip(path, limits)
    try:
        return docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise CorruptMedia(f"the DOCX is damaged and cannot be read ({_DOCX_FAULTS.get(type(exc), 'unreadable')})"
                           ) from exc
    except Exception as exc:  # lxml's XMLSyntaxError and friends: malformed parts
        if type(exc).__module__.startswith("lxml"):
            raise CorruptMedia("the DOCX contains malformed XML") from exc
        raise


def docx_paragraphs(document: Any) -> list[str]:
    """Body paragraphs, then table cells row by row (where python-docx keeps them apart)."""
    with reading_input("the DOCX"):
        texts = [p.text for p in document.paragraphs]
        for table in document.tables:
            for row in table.rows:
                cells = [c.text for c in row.cells]
                texts.append("\t".join(cells))
    return texts


def docx_page_count(path: Path) -> int | None:
    """Pages as last saved by Word (docProps/app.xml); None when the file does not say."""
    try:
        with zipfile.ZipFile(path) as zf:
            xml = zf.read("docProps/app.xml")[:100_000].decode("utf-8", "replace")
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    match = re.search(r"<Pages>(\d+)</Pages>", xml)
    return int(match.group(1)) if match else None


# -- summaries for routing -----------------------------------------------------------------------------
def document_summary(path: Path, mime: str, limits: MediaLimits | None = None) -> dict[str, Any]:
    """Cheap facts for routing: ``pages`` (PDF; DOCX when Word recorded it), ``format``."""
    limits = limits or MediaLimits()
    if mime == PDF:
        with open_pdf(path) as doc:
            return {"format": "pdf", "pages": len(doc), "pdf_version": doc.get_version()}
    check_zip(path, limits)
    return {"format": "docx", "pages": docx_page_count(path)}


# -- LibreOffice ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Converted:
    path: Path
    stderr: str


def convert_with_soffice(source: Path, out_dir: Path, target: str, *, timeout: float | None) -> Converted:
    """``soffice --headless --convert-to <target>`` with a throw-away profile; killed on timeout."""
    binary = soffice_path()
    if binary is None:
        raise Unavailable("LibreOffice (soffice) is not installed on this worker; DOCX → PDF is unavailable",
                          public_message="document conversion is not available on this server")
    with tempfile.TemporaryDirectory(prefix="soffice-profile-") as profile:
        cmd = [binary, f"-env:UserInstallation=file://{profile}", "--headless", "--norestore",
               "--nologo", "--convert-to", target, "--outdir", str(out_dir), str(source)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)  # soffice forks: kill the whole group
            proc.wait()
            raise StepTimeout(f"LibreOffice did not finish within {timeout:.0f} s") from exc
    text = out.decode("utf-8", "replace")
    produced = out_dir / f"{source.stem}.{target.split(':')[0]}"
    if proc.returncode != 0 or not produced.exists():
        raise ToolFailed(f"LibreOffice could not convert the document (exit {proc.returncode})",
                         stderr_tail=text, error_class="invalid_input")
    return Converted(produced, text)
