"""Sending stored objects: Range-capable file responses on local storage, presigned redirects on S3."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from mediamill.api.deps import safe_filename
from mediamill.errors import NotFound
from mediamill.storage import Storage

PRESIGN_SECONDS = 300
#: HLS playlists are served by the API itself, also on S3: a redirect would move the base URL their
#: relative URIs resolve against to the bucket, where the siblings are stored under other keys
PLAYLIST_TYPES = frozenset({"application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl"})
_MAX_PLAYLIST_BYTES = 4 * 1024 * 1024


def is_plain_output_name(name: str) -> bool:
    """A relative name of ``/``-separated plain segments: no ``.``/``..``, no empty segment, no ``\\``."""
    if not name or len(name) > 1000 or "\\" in name or "\x00" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def output_url_path(name: str) -> str:
    """An output name as a URL path: each segment escaped, the ``/`` between them kept."""
    return quote(name, safe="/")


def send_playlist(storage: Storage, key: str, *, media_type: str) -> Response:
    """An HLS playlist's bytes from the API's own URL (inline; players re-read live playlists)."""
    data = b"".join(storage.iter_bytes(key, 0, _MAX_PLAYLIST_BYTES - 1))
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})


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
