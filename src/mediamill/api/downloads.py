"""Sending stored objects: Range-capable file responses on local storage, presigned redirects on S3."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from mediamill.api.deps import safe_filename
from mediamill.errors import NotFound
from mediamill.storage import Storage

PRESIGN_SECONDS = 300


def send_object(request: Request, storage: Storage, key: str, *, filename: str | None,
                media_type: str | None) -> Response:
    """The object as a download: a file (Range, ETag, HEAD) or a short-lived redirect."""
    name = safe_filename(filename, "download")
    path = storage.local_path(key)
    if path is not None:
        if not path.is_file():
            raise NotFound("the file is no longer in storage")
        return FileResponse(path, media_type=media_type or "application/octet-stream", filename=name,
                            content_disposition_type="attachment")
    url = storage.presign_get(key, expires=PRESIGN_SECONDS, filename=name)
    if url:
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    return StreamingResponse(storage.iter_bytes(key), media_type=media_type or "application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
