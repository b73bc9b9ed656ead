"""Document actions: validate (PDF, DOCX), extract text per page, page thumbnail, convert.

DOCX → PDF needs LibreOffice; on a worker without it ``convert_document`` fails with class
``unavailable`` so a step with ``on_failure: continue`` leaves the job ``partial``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import pypdfium2 as pdfium
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from mediamill.actions.base import OutputFile, StepContext, StepResult, action, get_action, register_fuser
from mediamill.actions.fusing import Later, Now, Writes, run_with_writes
from mediamill.errors import InternalError, UnsupportedFormat
from mediamill.media import document as doc
from mediamill.media.decoders import reading_input
from mediamill.media.sniff import require_kind, sniff_file

_ERRORS = ("invalid_input", "internal")
_T = TypeVar("_T")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExtractTextParams(_Params):
    page_separator: str = Field(default="\f", max_length=16, description="between pages in text.txt")


class RenderThumbnailParams(_Params):
    page: int = Field(default=1, ge=1)
    width: int = Field(default=600, ge=16, le=4000)
    format: Literal["png", "jpeg", "webp"] = "png"
    quality: int = Field(default=85, ge=1, le=100)


class ConvertDocumentParams(_Params):
    format: Literal["pdf", "text"] = Field(default="pdf", validation_alias=AliasChoices("format", "to"),
                                           description="target: pdf (DOCX needs LibreOffice) or text")


def _kind(ctx: StepContext) -> str:
    """``pdf`` or ``docx`` from the bytes; anything else is refused with what it is."""
    path = ctx.input_path
    mime = sniff_file(path)
    if mime == doc.OLE:
        raise UnsupportedFormat("an encrypted (password-protected) Office file or a legacy .doc; "
                                "save it as an unprotected DOCX or PDF")
    require_kind(path, (doc.PDF, doc.DOCX), "a PDF or DOCX document", max_bytes=ctx.limits.max_input_bytes)
    return "pdf" if mime == doc.PDF else "docx"


def _validate_pdf(ctx: StepContext, pdf: pdfium.PdfDocument) -> StepResult:
    doc.check_pages(len(pdf), ctx.limits)
    info = doc.pdf_info(pdf)
    # the first and last pages: a cut-short file usually loses its tail
    for index in {0, len(pdf) - 1}:
        page = doc.load_page(pdf, index)
        page.get_textpage().close()
        page.close()
    return _validated(ctx, "pdf", info)


def _validate_docx(ctx: StepContext) -> StepResult:
    document = doc.open_docx(ctx.input_path, ctx.limits)
    with reading_input("the DOCX"):
        info = {"paragraphs": len(document.paragraphs), "tables": len(document.tables),
                "pages": doc.docx_page_count(ctx.input_path),
                "metadata": {k: v for k, v in {"title": document.core_properties.title,
                                               "author": document.core_properties.author}.items() if v}}
    return _validated(ctx, "docx", info)


def _validated(ctx: StepContext, kind: str, info: dict[str, Any]) -> StepResult:
    ctx.progress(100.0)
    return StepResult(data={"format": kind, "valid": True, **info})


def _on_pdf(ctx: StepContext, step: Callable[[StepContext, pdfium.PdfDocument], _T]) -> _T:
    """A PDF step run alone, on its own open of the input."""
    with doc.open_pdf(ctx.input_path) as pdf:
        return step(ctx, pdf)


@action("validate_document", family="document", errors=_ERRORS, fuse="document")
def validate_document(ctx: StepContext) -> StepResult:
    """Check a PDF or DOCX opens (not encrypted, not malformed) and is within the page limit."""
    return _on_pdf(ctx, _validate_pdf) if _kind(ctx) == "pdf" else _validate_docx(ctx)


def _pdf_pages(ctx: StepContext, pdf: pdfium.PdfDocument) -> list[str]:
    doc.check_pages(len(pdf), ctx.limits)
    texts = []
    for i, text in enumerate(doc.pdf_page_texts(pdf)):
        texts.append(text)
        if i % 20 == 0:
            ctx.progress(90.0 * (i + 1) / len(pdf))
    return texts


def _extract_pdf(ctx: StepContext, pdf: pdfium.PdfDocument) -> StepResult:
    pages = _pdf_pages(ctx, pdf)
    body: dict[str, Any] = {"format": "pdf", "pages": [
        {"page": i + 1, "text": t, "chars": len(t)} for i, t in enumerate(pages)]}
    return _text_files(ctx, ctx.params.page_separator.join(pages), body, {"pages": len(pages)})


def _extract_docx(ctx: StepContext) -> StepResult:
    paragraphs = doc.docx_paragraphs(doc.open_docx(ctx.input_path, ctx.limits))
    body = {"format": "docx", "paragraphs": paragraphs}
    return _text_files(ctx, "\n".join(paragraphs), body, {"paragraphs": len(paragraphs)})


def _text_files(ctx: StepContext, text: str, body: dict[str, Any], facts: dict[str, Any]) -> StepResult:
    txt, js = ctx.work_dir / "text.txt", ctx.work_dir / "text.json"
    txt.write_text(text)
    js.write_text(json.dumps(body, ensure_ascii=False))
    text = txt.read_text()  # counted as a reader of the file sees it (line ends made "\n")
    facts.update(chars=len(text), words=len(text.split()))
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(txt.name, txt, "text/plain", facts),
                               OutputFile(js.name, js, "application/json", facts)], data=facts)


@action("extract_text", params=ExtractTextParams, family="document", errors=_ERRORS, fuse="document")
def extract_text(ctx: StepContext) -> StepResult:
    """Text per page (PDF) or per paragraph (DOCX): text.txt plus text.json."""
    return _on_pdf(ctx, _extract_pdf) if _kind(ctx) == "pdf" else _extract_docx(ctx)


def _render_pdf(ctx: StepContext, pdf: pdfium.PdfDocument, writes: Writes) -> StepResult:
    """The page rendered here, its file written by ``writes`` (at once, or beside the rest of a fused run)."""
    p: RenderThumbnailParams = ctx.params
    doc.check_pages(len(pdf), ctx.limits)
    index = min(p.page, len(pdf)) - 1
    image = doc.render_page(pdf, index, p.width)
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[p.format]
    out = ctx.work_dir / f"page_{index + 1}.{ext}"
    writes.write(ctx, lambda: image.save(out, format=p.format.upper(),
                                         **({} if p.format == "png" else {"quality": p.quality})))
    meta = {"page": index + 1, "width": image.width, "height": image.height, "format": p.format}
    return StepResult(outputs=[OutputFile(out.name, out, f"image/{p.format}", meta)], data=meta)


@action("render_thumbnail", params=RenderThumbnailParams, family="document",
        errors=("invalid_input", "unavailable", "timeout", "internal"), fuse="document")
def render_thumbnail(ctx: StepContext) -> StepResult:
    """Render one page (default the first) to PNG/JPEG/WebP; DOCX needs LibreOffice."""
    if _kind(ctx) == "pdf":
        return _on_pdf(ctx, lambda c, pdf: _render_pdf(c, pdf, Now()))
    with tempfile.TemporaryDirectory(prefix="render-") as scratch, \
            doc.open_pdf(_docx_to_pdf(ctx, Path(scratch))) as pdf:
        return _render_pdf(ctx, pdf, Now())


def _docx_to_pdf(ctx: StepContext, scratch: Path) -> Path:
    doc.open_docx(ctx.input_path, ctx.limits)  # refuse a bad DOCX before starting LibreOffice
    source = scratch / "document.docx"
    shutil.copyfile(ctx.input_path, source)
    return doc.convert_with_soffice(source, scratch, "pdf", timeout=ctx.timeout_seconds).path


@action("convert_document", params=ConvertDocumentParams, family="document",
        errors=("invalid_input", "unavailable", "timeout", "internal"), fuse="document")
def convert_document(ctx: StepContext) -> StepResult:
    """DOCX → PDF with LibreOffice (``unavailable`` without it); PDF or DOCX → plain text."""
    kind = _kind(ctx)
    if ctx.params.format == "text":
        return _to_text(ctx, kind)
    out = ctx.work_dir / "document.pdf"
    if kind == "pdf":
        shutil.copyfile(ctx.input_path, out)  # already PDF: pass it through unchanged
        converted = False
    else:
        with tempfile.TemporaryDirectory(prefix="convert-") as scratch:
            shutil.move(_docx_to_pdf(ctx, Path(scratch)), out)
        converted = True
    with doc.open_pdf(out) as pdf:
        pages = len(pdf)
    meta = {"pages": pages, "converted": converted, "from": kind}
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(out.name, out, doc.PDF, meta)], data=meta)


def _to_text(ctx: StepContext, kind: str) -> StepResult:
    out = ctx.work_dir / "document.txt"
    if kind == "pdf":
        text = "\f".join(_on_pdf(ctx, _pdf_pages))
    else:
        text = "\n".join(doc.docx_paragraphs(doc.open_docx(ctx.input_path, ctx.limits)))
    out.write_text(text)
    meta = {"chars": len(text), "words": len(text.split()), "from": kind}
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(out.name, out, "text/plain", meta)], data=meta)


# -- fused ----------------------------------------------------------------------------------------------
#: The steps a fused run gives its one open PDF (the rest run as they would alone)
_PDF_STEPS: dict[str, Callable[[StepContext, pdfium.PdfDocument], StepResult]] = {
    "validate_document": _validate_pdf, "extract_text": _extract_pdf}


@register_fuser("document", inputs=(doc.PDF,))
def fuse_document_steps(ctxs: Sequence[StepContext]) -> list[StepResult]:
    """Consecutive document steps on one open of the PDF. Its page thumbnails are rendered first and encoded in
    threads while the text is extracted: every pdfium call stays on the run's own thread (pdfium is not
    thread-safe), the encode is Pillow's, which lets go of the GIL. Fused on PDF inputs only (a DOCX's thumbnail
    and conversion need LibreOffice, whose absence would fail the run); given a DOCX, its steps run one after
    another."""
    if _kind(ctxs[0]) != "pdf":
        return [_alone(ctx) for ctx in ctxs]
    return run_with_writes(Later("document-encode"), lambda writes: _fuse_pdf(ctxs, writes))


def _fuse_pdf(ctxs: Sequence[StepContext], writes: Later) -> list[StepResult]:
    with doc.open_pdf(ctxs[0].input_path) as pdf:
        # the thumbnails first: their encodes then run beside the text extraction
        early = {i: _render_pdf(ctx, pdf, writes) for i, ctx in enumerate(ctxs) if ctx.action == "render_thumbnail"}
        return [early[i] if i in early else _on_shared(ctx, pdf) for i, ctx in enumerate(ctxs)]


def _on_shared(ctx: StepContext, pdf: pdfium.PdfDocument) -> StepResult:
    step = _PDF_STEPS.get(ctx.action)
    return _alone(ctx) if step is None else step(ctx, pdf)


def _alone(ctx: StepContext) -> StepResult:
    spec = get_action(ctx.action)
    if spec is None:
        raise InternalError(f"no action {ctx.action!r}")
    return spec.fn(ctx)
