"""Document actions: validate (PDF, DOCX), extract text per page, page thumbnail, convert.

DOCX → PDF needs LibreOffice; on a worker without it ``convert_document`` fails with class
``unavailable`` so a step with ``on_failure: continue`` leaves the job ``partial``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from mediamill.actions.base import OutputFile, StepContext, StepResult, action
from mediamill.errors import UnsupportedFormat
from mediamill.media import document as doc
from mediamill.media.decoders import reading_input
from mediamill.media.sniff import require_kind, sniff_file

_ERRORS = ("invalid_input", "internal")


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


def _validate_pdf(ctx: StepContext) -> dict[str, Any]:
    with doc.open_pdf(ctx.input_path) as pdf:
        doc.check_pages(len(pdf), ctx.limits)
        info = doc.pdf_info(pdf)
        # the first and last pages: a cut-short file usually loses its tail
        for index in {0, len(pdf) - 1}:
            page = doc.load_page(pdf, index)
            page.get_textpage().close()
            page.close()
    return info


def _validate_docx(ctx: StepContext) -> dict[str, Any]:
    document = doc.open_docx(ctx.input_path, ctx.limits)
    with reading_input("the DOCX"):
        return {"paragraphs": len(document.paragraphs), "tables": len(document.tables),
                "pages": doc.docx_page_count(ctx.input_path),
                "metadata": {k: v for k, v in {"title": document.core_properties.title,
                                               "author": document.core_properties.author}.items() if v}}


@action("validate_document", family="document", errors=_ERRORS)
def validate_document(ctx: StepContext) -> StepResult:
    """Check a PDF or DOCX opens (not encrypted, not malformed) and is within the page limit."""
    kind = _kind(ctx)
    info = _validate_pdf(ctx) if kind == "pdf" else _validate_docx(ctx)
    ctx.progress(100.0)
    return StepResult(data={"format": kind, "valid": True, **info})


def _pdf_pages(ctx: StepContext) -> list[str]:
    with doc.open_pdf(ctx.input_path) as pdf:
        doc.check_pages(len(pdf), ctx.limits)
        texts = []
        for i, text in enumerate(doc.pdf_page_texts(pdf)):
            texts.append(text)
            if i % 20 == 0:
                ctx.progress(90.0 * (i + 1) / len(pdf))
        return texts


@action("extract_text", params=ExtractTextParams, family="document", errors=_ERRORS)
def extract_text(ctx: StepContext) -> StepResult:
    """Text per page (PDF) or per paragraph (DOCX): text.txt plus text.json."""
    kind = _kind(ctx)
    txt, js = ctx.work_dir / "text.txt", ctx.work_dir / "text.json"
    if kind == "pdf":
        pages = _pdf_pages(ctx)
        txt.write_text(ctx.params.page_separator.join(pages))
        body: dict[str, Any] = {"format": "pdf", "pages": [
            {"page": i + 1, "text": t, "chars": len(t)} for i, t in enumerate(pages)]}
        facts = {"pages": len(pages)}
    else:
        paragraphs = doc.docx_paragraphs(doc.open_docx(ctx.input_path, ctx.limits))
        txt.write_text("\n".join(paragraphs))
        body = {"format": "docx", "paragraphs": paragraphs}
        facts = {"paragraphs": len(paragraphs)}
    js.write_text(json.dumps(body, ensure_ascii=False))
    text = txt.read_text()
    facts.update(chars=len(text), words=len(text.split()))
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(txt.name, txt, "text/plain", facts),
                               OutputFile(js.name, js, "application/json", facts)], data=facts)


def _pdf_for(ctx: StepContext, kind: str, scratch: Path) -> Path:
    if kind == "pdf":
        return ctx.input_path
    doc.open_docx(ctx.input_path, ctx.limits)  # refuse a bad DOCX before starting LibreOffice
    source = scratch / "document.docx"
    shutil.copyfile(ctx.input_path, source)
    return doc.convert_with_soffice(source, scratch, "pdf", timeout=ctx.timeout_seconds).path


@action("render_thumbnail", params=RenderThumbnailParams, family="document",
        errors=("invalid_input", "unavailable", "timeout", "internal"))
def render_thumbnail(ctx: StepContext) -> StepResult:
    """Render one page (default the first) to PNG/JPEG/WebP; DOCX needs LibreOffice."""
    p: RenderThumbnailParams = ctx.params
    kind = _kind(ctx)
    with tempfile.TemporaryDirectory(prefix="render-") as scratch, \
            doc.open_pdf(_pdf_for(ctx, kind, Path(scratch))) as pdf:
        doc.check_pages(len(pdf), ctx.limits)
        index = min(p.page, len(pdf)) - 1
        image = doc.render_page(pdf, index, p.width)
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[p.format]
    out = ctx.work_dir / f"page_{index + 1}.{ext}"
    image.save(out, format=p.format.upper(), **({} if p.format == "png" else {"quality": p.quality}))
    meta = {"page": index + 1, "width": image.width, "height": image.height, "format": p.format}
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(out.name, out, f"image/{p.format}", meta)], data=meta)


@action("convert_document", params=ConvertDocumentParams, family="document",
        errors=("invalid_input", "unavailable", "timeout", "internal"))
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
            shutil.move(_pdf_for(ctx, kind, Path(scratch)), out)
        converted = True
    with doc.open_pdf(out) as pdf:
        pages = len(pdf)
    meta = {"pages": pages, "converted": converted, "from": kind}
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(out.name, out, doc.PDF, meta)], data=meta)


def _to_text(ctx: StepContext, kind: str) -> StepResult:
    out = ctx.work_dir / "document.txt"
    if kind == "pdf":
        text = "\f".join(_pdf_pages(ctx))
    else:
        text = "\n".join(doc.docx_paragraphs(doc.open_docx(ctx.input_path, ctx.limits)))
    out.write_text(text)
    meta = {"chars": len(text), "words": len(text.split()), "from": kind}
    ctx.progress(100.0)
    return StepResult(outputs=[OutputFile(out.name, out, "text/plain", meta)], data=meta)
