"""Document actions on generated PDFs and DOCX files."""

from __future__ import annotations

import json
import time
import zipfile

import pypdfium2 as pdfium
import pytest

from mediamill.config import MediaLimits
from mediamill.errors import CorruptMedia, InvalidInput, SourceTooLarge, Unavailable, UnsupportedFormat
from mediamill.media.tools import soffice_path

from .conftest import run_action, write_pdf
from .probers import probe_image


def test_validate_pdf(media, tmp_path):
    d = run_action("validate_document", media.pdf, tmp_path).data
    assert d["format"] == "pdf" and d["pages"] == 3 and d["page_width_pt"] == 612


def test_validate_docx(media, tmp_path):
    d = run_action("validate_document", media.docx, tmp_path).data
    assert d["format"] == "docx" and d["paragraphs"] == 3


@pytest.mark.parametrize("name, error", [
    ("pdf_encrypted", UnsupportedFormat), ("pdf_truncated", CorruptMedia), ("docx_truncated", CorruptMedia),
    ("empty", CorruptMedia), ("jpeg", UnsupportedFormat), ("text_as_mp4", UnsupportedFormat),
])
def test_validate_document_refuses(media, tmp_path, name, error):
    start = time.monotonic()
    with pytest.raises(error) as info:
        run_action("validate_document", getattr(media, name), tmp_path)
    assert isinstance(info.value, InvalidInput) and str(media.root) not in info.value.message
    assert time.monotonic() - start < 3


def test_encrypted_office_file_is_refused_clearly(tmp_path):
    ole = tmp_path / "locked.docx"
    ole.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 4000)
    with pytest.raises(UnsupportedFormat, match="encrypted"):
        run_action("validate_document", ole, tmp_path / "w")


def test_page_limit(media, tmp_path):
    with pytest.raises(SourceTooLarge):
        run_action("validate_document", media.pdf, tmp_path, limits=MediaLimits(max_document_pages=2))


def test_zip_bomb_docx_refused(media, tmp_path):
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(media.docx) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("word/media/padding.xml", b"\0" * 50_000_000)
    with pytest.raises(SourceTooLarge, match="ZIP bomb"):
        run_action("validate_document", bomb, tmp_path / "w")


def test_extract_text_pdf_per_page(media, tmp_path):
    result = run_action("extract_text", media.pdf, tmp_path)
    txt, js = result.outputs
    assert (txt.name, js.name) == ("text.txt", "text.json")
    pages = json.loads(js.path.read_text())["pages"]
    assert [p["text"].strip() for p in pages] == ["Hello page one", "Second page here", "Third and last"]
    assert txt.path.read_text().count("\f") == 2 and result.data["pages"] == 3


def test_extract_text_docx_paragraphs(media, tmp_path):
    result = run_action("extract_text", media.docx, tmp_path)
    body = json.loads(result.outputs[1].path.read_text())
    assert body["paragraphs"] == ["Report", "First paragraph.", "Second paragraph."]


def test_render_thumbnail(media, tmp_path):
    [out] = run_action("render_thumbnail", media.pdf, tmp_path, {"width": 300}).outputs
    assert out.name == "page_1.png"
    fmt, w, h, _ = probe_image(out.path)
    assert (fmt, w) == ("png", 300) and h == pytest.approx(300 * 792 / 612, abs=2)


def test_render_thumbnail_docx_without_libreoffice(media, tmp_path):
    if soffice_path():
        pytest.skip("LibreOffice is installed here")
    with pytest.raises(Unavailable, match="LibreOffice"):
        run_action("render_thumbnail", media.docx, tmp_path)


def test_convert_docx_to_pdf(media, tmp_path):
    if not soffice_path():
        with pytest.raises(Unavailable) as info:
            run_action("convert_document", media.docx, tmp_path)
        assert info.value.error_class == "unavailable"
        return
    [out] = run_action("convert_document", media.docx, tmp_path, timeout=120).outputs
    assert len(pdfium.PdfDocument(out.path)) >= 1


def test_convert_pdf_passthrough_and_to_text(media, tmp_path):
    [pdf] = run_action("convert_document", media.pdf, tmp_path / "a").outputs
    assert len(pdfium.PdfDocument(pdf.path)) == 3
    [txt] = run_action("convert_document", media.docx, tmp_path / "b", {"to": "text"}).outputs
    assert "Second paragraph." in txt.path.read_text()


def test_many_pages_text_is_fast(tmp_path):
    big = write_pdf(tmp_path / "twenty.pdf", [f"Page number {i}" for i in range(20)])
    start = time.monotonic()
    result = run_action("extract_text", big, tmp_path / "w")
    assert result.data["pages"] == 20 and time.monotonic() - start < 1.0
