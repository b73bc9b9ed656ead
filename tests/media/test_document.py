"""Document actions on generated PDFs and DOCX files."""

from __future__ import annotations

import json
import threading
import time
import zipfile

import pypdfium2 as pdfium
import pytest
from PIL import Image

from mediamill.actions.base import fuses, get_action, get_fuser
from mediamill.config import MediaLimits
from mediamill.errors import CorruptMedia, InvalidInput, SourceTooLarge, Unavailable, UnsupportedFormat
from mediamill.media.tools import soffice_path

from .conftest import make_ctx, run_action, write_pdf
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


# -- fused: consecutive document steps as one unit ----------------------------------------------------------
_DOC_STEPS = (("validate_document", None), ("extract_text", None), ("render_thumbnail", {"width": 300}),
              ("convert_document", {"to": "text"}))


def _doc_ctxs(path, work, progress=None):
    return [make_ctx(a, path, work / a, p, progress=None if progress is None else
                     (lambda pct, a=a: progress.append((a, pct, threading.current_thread().name))))
            for a, p in _DOC_STEPS]


def _files(result):
    return [(o.name, o.mime_type, o.metadata, o.path.read_bytes()) for o in result.outputs]


@pytest.mark.parametrize("name", ["pdf", "docx"])
def test_fused_document_steps_give_what_each_step_gives_alone(media, tmp_path, name):
    """One open of the document for the whole run; every step's data and files are those of the step run alone,
    byte for byte (a DOCX run's steps run one after another)."""
    source = getattr(media, name)
    alone = [get_action(c.action).fn(c) for c in _doc_ctxs(source, tmp_path / "alone")
             if c.action != "render_thumbnail" or name == "pdf"]  # a DOCX thumbnail needs LibreOffice
    ctxs = [c for c in _doc_ctxs(source, tmp_path / "fused") if c.action != "render_thumbnail" or name == "pdf"]
    fused = get_fuser("document")(ctxs)
    assert len(fused) == len(alone) == len(ctxs)
    for a, b in zip(alone, fused, strict=True):
        assert a.data == b.data and _files(a) == _files(b)
    assert fused[0].data["format"] == name and fused[1].outputs[0].name == "text.txt"


def test_fused_pdf_thumbnail_is_encoded_while_the_text_is_extracted(media, tmp_path, monkeypatch):
    """The thumbnail's encode and the text extraction wait for each other to have started: one after another
    (in either order) they never would. Every pdfium call stays on the run's own thread; each step reaches 100 %
    from that thread; no encode thread outlives the run."""
    from mediamill.actions import document as doc_actions

    encoding, extracting, main = threading.Event(), threading.Event(), threading.current_thread()
    real_save, real_texts, real_render = Image.Image.save, doc_actions.doc.pdf_page_texts, doc_actions.doc.render_page

    def save(self, *args, **kwargs):
        encoding.set()
        assert extracting.wait(30), "the text extraction did not start while the thumbnail was encoded"
        return real_save(self, *args, **kwargs)

    def texts(pdf):
        assert threading.current_thread() is main
        extracting.set()
        assert encoding.wait(30), "the thumbnail was not encoded while the text was extracted"
        return real_texts(pdf)

    def render(*args):
        assert threading.current_thread() is main
        return real_render(*args)

    monkeypatch.setattr(Image.Image, "save", save)
    monkeypatch.setattr(doc_actions.doc, "pdf_page_texts", texts)
    monkeypatch.setattr(doc_actions.doc, "render_page", render)
    progress: list[tuple[str, float, str]] = []
    results = get_fuser("document")(_doc_ctxs(media.pdf, tmp_path, progress))
    assert results[2].outputs[0].path.stat().st_size > 0
    assert sorted(a for a, pct, _ in progress if pct == 100.0) == sorted(a for a, _ in _DOC_STEPS)
    assert {thread for *_, thread in progress} == {main.name}
    assert not [t for t in threading.enumerate() if t.name.startswith("document-encode")]


def test_a_failed_thumbnail_encode_fails_the_fused_run_and_leaves_no_thread(media, tmp_path, monkeypatch):
    def save(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(OSError, match="No space left"):
        get_fuser("document")(_doc_ctxs(media.pdf, tmp_path))
    assert not [t for t in threading.enumerate() if t.name.startswith("document-encode")]


def test_a_fused_run_on_a_damaged_pdf_fails_as_its_first_step_would(media, tmp_path):
    with pytest.raises(CorruptMedia):
        get_fuser("document")(_doc_ctxs(media.pdf_truncated, tmp_path))


def test_document_steps_fuse_on_pdf_inputs_only():
    """A DOCX's steps stay separate units: its thumbnail and conversion need LibreOffice, and a fused run that
    fails is done again step by step."""
    assert fuses("document", "application/pdf")
    assert not fuses("document", "application/vnd.openxmlformats-officedocument.wordprocessingml.document")
    assert not fuses("document", None) and not fuses("no-such-key", "application/pdf")
    assert fuses("image", "image/jpeg")  # registered without ``inputs``: any input
