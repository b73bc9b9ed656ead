"""Uploads: the tus 1.0 protocol (core, creation, creation-with-upload, creation-defer-length,
termination, expiration, checksum) and presigned direct uploads.

Unfinished tus uploads live where every API replica sees them (S3 multipart parts on S3 storage,
a part file in the shared uploads folder otherwise: ``mediamill.api.tusparts``), so an upload
started on one replica can be resumed on another; the last byte makes them an object in storage
under a server-generated key. Client metadata (``filename`` …) is only ever stored as data: it
never names a path. A ``checksum`` metadata value (``sha256 <base64>``, the form of
``Upload-Checksum``) is checked against the assembled upload.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from mediamill.api import auth, signing
from mediamill.api.auth import Caller
from mediamill.api.deps import base_url, blocking, client_int, read_engine, runtime, safe_filename, upload_slot
from mediamill.api.models import PresignOut, PresignRequest, UploadOut
from mediamill.api.problems import PROBLEM_RESPONSES, Problem
from mediamill.api.streaming import run_with_pipe
from mediamill.api.tusparts import Appender, PartStore, store_for
from mediamill.engine.submit import sniff_object
from mediamill.errors import (
    ChecksumMismatch,
    Conflict,
    Gone,
    InvalidField,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    SourceTooLarge,
    UnsupportedMediaType,
)
from mediamill.storage import new_key
from mediamill.store import uploads_repo
from mediamill.store.inputs import input_referenced, lock_input
from mediamill.store.timeutil import iso

router = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses=PROBLEM_RESPONSES)
TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum"
CHECKSUMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
OCTETS = "application/offset+octet-stream"
#: how long a PATCH's claim on an upload lasts without renewal (renewed while bytes arrive)
PATCH_LEASE_SECONDS = 60.0
#: the tus request headers as OpenAPI parameters (Upload-Checksum, Upload-Defer-Length and a body on
#: creation are tus extensions, described on their routes)
_TUS_RESUMABLE = {"in": "header", "name": "Tus-Resumable", "required": True,
                  "schema": {"type": "string", "enum": [TUS_VERSION]}, "description": "the tus protocol version"}
_UPLOAD_METADATA = {"in": "header", "name": "Upload-Metadata", "required": False,
                    "description": "comma-separated `key base64value` pairs (filename …)",
                    "schema": {"type": "string", "maxLength": 4096, "pattern": r"^([A-Za-z0-9_.\-]{1,100}"
                               r"( (?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)?"
                               r"(,[A-Za-z0-9_.\-]{1,100}( (?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|"
                               r"[A-Za-z0-9+/]{3}=)?)?)*)?$"}}
_OFFSET = {"in": "header", "name": "Upload-Offset", "required": True,
           "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
           "description": "where these bytes go: the upload's current offset (409 otherwise)"}


_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def _length(*, required: bool, description: str) -> dict[str, Any]:
    return {"in": "header", "name": "Upload-Length", "required": required, "description": description,
            "schema": {"type": "integer", "minimum": 0}}


TUS_ERRORS: dict[int | str, dict[str, Any]] = {
    412: {"description": "Tus-Resumable is missing or not 1.0.0 (HEAD: no body)", "model": Problem},
    409: {"description": "not the upload's offset, another request is writing it, or this server cannot see "
                "its bytes so far (error_class upload_unreachable: replicas must share the uploads folder)",
          "model": Problem},
    410: {"description": "the upload expired, or its stored bytes are gone (error_class upload_lost)",
          "model": Problem},
}


def _tus_headers(request: Request, **extra: Any) -> dict[str, str]:
    headers = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}
    headers.update({k.replace("_", "-"): str(v) for k, v in extra.items() if v is not None})
    return headers


def _require_tus(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise PreconditionFailed(f"send Tus-Resumable: {TUS_VERSION}")


def _http_date(dt: datetime | None) -> str | None:
    return format_datetime(dt.replace(tzinfo=UTC), usegmt=True) if dt else None


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata: key base64,key2 base64`` → dict (InvalidInput when malformed)."""
    out: dict[str, str] = {}
    if not header:
        return out
    if len(header) > 4096:
        raise InvalidField("header.Upload-Metadata", "longer than 4096 characters")
    for pair in header.split(","):
        key, _, value = pair.strip().partition(" ")
        if not _METADATA_KEY.match(key):
            raise InvalidField("header.Upload-Metadata", "malformed: expected `key base64value` pairs "
                                                        "(keys: letters, digits, . _ -)")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8", "replace") if value else ""
        except (binascii.Error, ValueError):
            raise InvalidInput(f"Upload-Metadata value of {key!r} is not base64") from None
    return out


def _encode_metadata(meta: dict[str, Any]) -> str:
    return ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" if v != "" else k for k, v in meta.items())


def uploads_folder(settings: Any) -> Path:
    """Where unfinished uploads on local storage are kept (shared by every API replica)."""
    return Path(settings.uploads_dir) if settings.uploads_dir else Path(settings.data_dir) / "uploads"


def part_store(rt: Any, session: dict[str, Any] | None = None) -> PartStore:
    """Where the bytes of ``session`` are (or, without one, where a new upload's go)."""
    if session is not None and not session["id"].isalnum():
        raise NotFound("no such upload")
    return store_for(rt.storage, uploads_folder(rt.settings), rt.settings.max_upload_bytes, session)


def _session(request: Request, caller: Caller, upload_id: str) -> dict[str, Any]:
    with read_engine(request).connect() as conn:
        session = uploads_repo.get_session(conn, upload_id, tenant_id=caller.tenant_id)
    if uploads_repo.is_expired(session):
        raise Gone(f"upload {upload_id} expired")
    return session


# ------------------------------------------------------------------------------ discovery
@router.options("", status_code=204, response_class=Response, responses={204: {"description": "tus capabilities"}})
def tus_options(request: Request) -> Response:
    """tus discovery: version, extensions, maximum size, checksum algorithms."""
    return Response(status_code=204, headers={
        "Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION, "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(runtime(request).settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)})


# ------------------------------------------------------------------------------ creation
def _declared_length(request: Request) -> int | None:
    length = _length_header(request)
    if length is None and request.headers.get("upload-defer-length") != "1":
        raise InvalidInput("send Upload-Length (or Upload-Defer-Length: 1)")
    return length


def _length_header(request: Request) -> int | None:
    """``Upload-Length`` when sent (a size over the limit is 413)."""
    length = request.headers.get("upload-length")
    if length is None:
        return None
    declared = client_int(length, "header.Upload-Length")
    if declared > runtime(request).settings.max_upload_bytes:
        raise SourceTooLarge(f"uploads are limited to {runtime(request).settings.max_upload_bytes} bytes")
    return declared


@router.post("", status_code=201, response_class=Response, openapi_extra={"parameters": [
    _TUS_RESUMABLE, _length(required=True, description="the total size in bytes (or send "
                            "`Upload-Defer-Length: 1` instead and declare it on a later PATCH)"), _UPLOAD_METADATA]},
    responses={201: {"description": "created; Location names the upload, Upload-Expires says until when",
                     "headers": {"Location": {"schema": {"type": "string"}},
                                 "Upload-Expires": {"schema": {"type": "string"}}}}, **TUS_ERRORS})
async def tus_create(request: Request, caller: Caller = auth.Submitter) -> Response:
    """tus creation (and creation-with-upload when the body carries the first bytes)."""
    _require_tus(request)
    length = _declared_length(request)
    meta = parse_metadata(request.headers.get("upload-metadata"))
    _expected_checksum(meta)  # a malformed one is refused now, not after the last byte
    rt = runtime(request)
    upload_id = uploads_repo.new_upload_id()
    state = await blocking(part_store(rt).create, upload_id, caller.tenant_id)
    session = await blocking(
        uploads_repo.create_session, rt.engine, tenant_id=caller.tenant_id, length=length, metadata=meta,
        filename=safe_filename(meta.get("filename") or meta.get("name")), created_by=caller.label,
        expires_in=rt.settings.upload_expiry_seconds, upload_id=upload_id, part_state=state)
    headers = _tus_headers(request, Location=f"{base_url(request)}/v1/uploads/{session['id']}",
                           Upload_Expires=_http_date(session["expires_at"]))
    if request.headers.get("content-type", "").startswith(OCTETS):
        with upload_slot(request, caller.key_id or caller.label):
            token, claimed = await _claim(request, caller, session["id"], offset=0)
            headers["Upload-Offset"] = str(await _receive(request, claimed, 0, token))
    elif length == 0:  # nothing will ever be PATCHed: complete at once
        await blocking(_finish, request, session)
        headers["Upload-Offset"] = "0"
    return Response(status_code=201, headers=headers)


# ------------------------------------------------------------------------------ core
@router.head("/{upload_id}", response_class=Response, openapi_extra={"parameters": [_TUS_RESUMABLE]},
             responses={200: {"description": "Upload-Offset, Upload-Length (or Upload-Defer-Length), Upload-Metadata",
                              "headers": {"Upload-Offset": {"schema": {"type": "integer"}}}}, **TUS_ERRORS})
async def tus_head(upload_id: str, request: Request, caller: Caller = auth.Viewer) -> Response:
    """tus: where the upload stands (Upload-Offset, Upload-Length)."""
    _require_tus(request)
    s = await blocking(_session, request, caller, upload_id)
    headers = _tus_headers(request, Upload_Offset=s["upload_offset"], Upload_Expires=_http_date(s["expires_at"]))
    if s["upload_length"] is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(s["upload_length"])
    meta = uploads_repo.client_metadata(s)
    if meta:
        headers["Upload-Metadata"] = _encode_metadata(meta)
    return Response(status_code=200, headers=headers)


@router.patch("/{upload_id}", status_code=204, response_class=Response,
              responses={204: {"description": "bytes accepted; Upload-Offset is the new offset",
                               "headers": {"Upload-Offset": {"schema": {"type": "integer"}}}},
                         460: {"description": "Upload-Checksum does not match the bytes (they are discarded)",
                               "model": Problem}, **TUS_ERRORS},
              openapi_extra={"parameters": [_TUS_RESUMABLE, _OFFSET, _length(
                  required=False, description="declares a deferred length (once)")],
                  "requestBody": {"required": True, "content": {OCTETS: {"schema": {"type": "string",
                                                                              "format": "binary"}}}}})
async def tus_patch(upload_id: str, request: Request, caller: Caller = auth.Submitter) -> Response:
    """tus: append bytes at ``Upload-Offset`` (409 when it is not the current offset)."""
    _require_tus(request)
    if not request.headers.get("content-type", "").startswith(OCTETS):
        raise UnsupportedMediaType(f"PATCH needs Content-Type: {OCTETS}")
    claimed = client_int(request.headers.get("upload-offset", ""), "header.Upload-Offset")
    length = _length_header(request)
    await blocking(_session, request, caller, upload_id)  # 404 / 410 first
    with upload_slot(request, caller.key_id or caller.label):
        token, s = await _claim(request, caller, upload_id, offset=claimed, length=length)
        offset = await _receive(request, s, claimed, token)
    return Response(status_code=204, headers=_tus_headers(request, Upload_Offset=offset,
                                                          Upload_Expires=_http_date(s["expires_at"])))


async def _claim(request: Request, caller: Caller, upload_id: str, *, offset: int | None,
                 length: int | None = None) -> tuple[str, dict[str, Any]]:
    """This request becomes the upload's only writer in every API process (409 otherwise)."""
    return await blocking(uploads_repo.claim_patch, runtime(request).engine, upload_id,  # type: ignore[no-any-return]
                          tenant_id=caller.tenant_id, offset=offset, length=length,
                          lease_seconds=PATCH_LEASE_SECONDS)


def _checksum(request: Request) -> tuple[Any, bytes] | None:
    return _parse_checksum(request.headers.get("upload-checksum"), "Upload-Checksum")


def _parse_checksum(header: str | None, where: str) -> tuple[Any, bytes] | None:
    """``<algorithm> <base64 digest>`` → (a fresh hasher, the expected digest)."""
    if not header:
        return None
    algo, _, value = header.strip().partition(" ")
    if algo not in CHECKSUMS:
        raise InvalidInput(f"unsupported {where} algorithm {algo!r}; use one of {', '.join(CHECKSUMS)}")
    try:
        return CHECKSUMS[algo](), base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where} value is not base64") from None


def _expected_checksum(meta: dict[str, Any]) -> tuple[Any, bytes] | None:
    """The whole upload's checksum the client declared in ``Upload-Metadata`` (key ``checksum``)."""
    return _parse_checksum(meta.get("checksum"), "checksum metadata")


class _RunningHash:
    """SHA-256 of an upload kept while its bytes arrive in order, so finishing it needs no re-read.

    Lost on a restart, in another process or after a discarded chunk; the file is read again then.
    """

    def __init__(self) -> None:
        self.offset = 0
        self.digest = hashlib.sha256()


def _hashes(request: Request) -> dict[str, _RunningHash]:
    return request.app.state.__dict__.setdefault("_upload_hashes", {})  # type: ignore[no-any-return]


def _running_hash(request: Request, upload_id: str, offset: int) -> _RunningHash | None:
    hashes = _hashes(request)
    if offset == 0:
        hashes[upload_id] = _RunningHash()
    h = hashes.get(upload_id)
    if h is None or h.offset != offset:
        hashes.pop(upload_id, None)
        return None
    return h


async def _receive(request: Request, s: dict[str, Any], offset: int, token: str) -> int:
    """Append the request body to the upload's stored bytes under the claim ``token``; returns the new offset
    (finishing the upload when complete). The claim ends here, whatever happens."""
    try:
        written = await _append(request, s, offset, token)
    except BaseException:
        with contextlib.suppress(Exception):  # else the lease runs out
            await blocking(uploads_repo.end_patch, runtime(request).engine, s["id"], token)
        raise
    return written


async def _append(request: Request, s: dict[str, Any], offset: int, token: str) -> int:
    rt = runtime(request)
    limit = s["upload_length"] if s["upload_length"] is not None else rt.settings.max_upload_bytes
    check = _checksum(request)
    store = part_store(rt, s)
    await blocking(store.check, s)  # 409/410 before a byte is written where the upload's bytes are not
    running = _running_hash(request, s["id"], offset)
    hashers = [h for h in (check[0] if check else None, running.digest if running else None) if h is not None]
    appender = store.appender(s, offset, hashers, _guard(rt.engine, s["id"], token))

    lease = _Lease(rt.engine, s["id"], token)

    async def produce(pipe: Any) -> bool:
        seen = 0
        try:
            async for chunk in request.stream():
                seen += len(chunk)
                if offset + seen > limit:
                    raise SourceTooLarge("more bytes than the declared Upload-Length")
                await lease.keep()
                await pipe.send(chunk)
        except ClientDisconnect:
            await pipe.end()
            return True  # keep what arrived: the client resumes from HEAD's offset
        await pipe.end()
        return False

    try:
        added, disconnected = await run_with_pipe(appender.write, produce)
    except BaseException:
        _discard(request, s["id"], appender)
        raise
    written = offset + added
    if check and (disconnected or check[0].digest() != check[1]):
        _discard(request, s["id"], appender)  # a chunk that fails its checksum is discarded whole
        if not disconnected:
            raise ChecksumMismatch("Upload-Checksum does not match the bytes received")
        written = offset
    if running:
        running.offset = written
    complete = s["upload_length"] is not None and written == s["upload_length"]
    try:
        await blocking(uploads_repo.release_patch, rt.engine, s["id"], token, old=offset, new=written, keep=complete,
                       part_state=appender.state)
    except BaseException:
        _discard(request, s["id"], appender)  # not recorded: these bytes never happened
        raise
    await blocking(appender.commit)
    if complete:
        running = _hashes(request).pop(s["id"], None)
        s = {**s, "upload_offset": written, "part_state": appender.state or s.get("part_state")}
        try:
            await blocking(_finish, request, s, running.digest.hexdigest() if running else None)
        finally:
            await blocking(uploads_repo.end_patch, rt.engine, s["id"], token)
    return written


def _guard(engine: Any, upload_id: str, token: str) -> Callable[[], None]:
    """Confirm (and renew) the claim before a write another writer could clobber (from the writer thread)."""

    def confirm() -> None:
        if not uploads_repo.extend_patch(engine, upload_id, token, PATCH_LEASE_SECONDS):
            raise Conflict("this request lost its claim on the upload")

    return confirm


class _Lease:
    """Renews a PATCH's claim while its bytes flow (a stalled client loses it: the idle timeout
    ends the request, or the lease runs out if the process died)."""

    def __init__(self, engine: Any, upload_id: str, token: str) -> None:
        self.engine, self.upload_id, self.token = engine, upload_id, token
        self.renewed = time.monotonic()

    async def keep(self) -> None:
        if time.monotonic() - self.renewed < PATCH_LEASE_SECONDS / 4:
            return
        self.renewed = time.monotonic()
        if not await blocking(uploads_repo.extend_patch, self.engine, self.upload_id, self.token,
                              PATCH_LEASE_SECONDS):
            raise Conflict("this request lost its claim on the upload")


def _discard(request: Request, upload_id: str, appender: Appender) -> None:
    """Forget a refused PATCH's bytes (they never count)."""
    _hashes(request).pop(upload_id, None)
    appender.rollback()


def _finish(request: Request, s: dict[str, Any], sha256: str | None = None) -> None:
    """Assemble the complete upload into a stored object, check it, and record what it is.

    The stored size must be the ``Upload-Length`` and, when the client declared a ``checksum``
    in its metadata, the stored bytes must match it (460 otherwise: the upload is dropped, as
    its bytes are all received and wrong)."""
    rt = runtime(request)
    store = part_store(rt, s)
    key, size, digest = store.assemble(s, sha256)
    try:
        _verify_declared_checksum(rt, s, key, digest)
        mime = sniff_object(rt.storage, key)
        uploads_repo.complete(rt.engine, s["id"], storage_key=key, size=size, facts={"mime": mime, "sha256": digest})
    except BaseException as exc:
        rt.storage.delete(key)
        if isinstance(exc, ChecksumMismatch):
            store.remove(s)
            uploads_repo.delete_session(rt.engine, s["id"])
        raise
    store.remove(s)


def _verify_declared_checksum(rt: Any, s: dict[str, Any], key: str, sha256: str) -> None:
    declared = _expected_checksum(uploads_repo.client_metadata(s))
    if declared is None:
        return
    hasher, expected = declared
    if hasher.name == "sha256":
        actual = bytes.fromhex(sha256)
    else:
        for chunk in rt.storage.iter_bytes(key):
            hasher.update(chunk)
        actual = hasher.digest()
    if actual != expected:
        raise ChecksumMismatch("the assembled upload does not match the checksum in its metadata; it was dropped: "
                               "upload the file again")


@router.delete("/{upload_id}", status_code=204, response_class=Response,
               responses={204: {"description": "terminated"}, **TUS_ERRORS},
               openapi_extra={"parameters": [_TUS_RESUMABLE]})
async def tus_delete(upload_id: str, request: Request, caller: Caller = auth.Submitter) -> Response:
    """tus termination: forget the upload and its bytes (409 once it is a job's input)."""
    _require_tus(request)
    rt = runtime(request)
    with rt.engine.connect() as conn:
        s = uploads_repo.get_session(conn, upload_id, tenant_id=caller.tenant_id)
    if s["job_id"] is not None:
        raise Conflict(f"upload {upload_id} is the input of job {s['job_id']}")
    if s["completed_at"] is None:  # no PATCH may be writing the bytes we remove
        _token, s = await _claim(request, caller, upload_id, offset=None)
    await blocking(_terminate, request, s)
    return Response(status_code=204, headers=_tus_headers(request))


def _terminate(request: Request, s: dict[str, Any]) -> None:
    rt = runtime(request)
    if s["completed_at"] is None:
        part_store(rt, s).remove(s)
    with rt.engine.begin() as conn:
        uploads_repo.delete_session_conn(conn, s["id"])
        key = s["storage_key"]
        if key:  # jobs may name the object by its storage_key: it stays while one does
            lock_input(conn, key)
            if not input_referenced(conn, key):
                rt.storage.delete(key)


@router.get("/{upload_id}", response_model=UploadOut)
def get_upload(upload_id: str, request: Request, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """An upload's state as JSON (for clients that do not speak tus)."""
    with read_engine(request).connect() as conn:
        s = uploads_repo.get_session(conn, upload_id, tenant_id=caller.tenant_id)
    return {"id": s["id"], "length": s["upload_length"], "offset": s["upload_offset"],
            "complete": s["completed_at"] is not None, "filename": s["filename"],
            "mime": uploads_repo.server_facts(s).get("mime"), "expires_at": iso(s["expires_at"]),
            "job_id": s["job_id"]}


# ------------------------------------------------------------------------------ presigned
@router.post("/presign", status_code=201, response_model=PresignOut)
def presign(body: PresignRequest, request: Request, caller: Caller = auth.Submitter) -> dict[str, Any]:
    """A direct upload URL: presigned PUT on S3, a signed expiring URL of this API on local storage.
    PUT the bytes there, then submit the job with the returned ``upload_id``."""
    rt = runtime(request)
    if body.size is not None and body.size > rt.settings.max_upload_bytes:  # the schema's maximum: a 422
        raise InvalidField("body.size", f"uploads are limited to {rt.settings.max_upload_bytes} bytes")
    key = new_key("uploads", caller.tenant_id)
    session = uploads_repo.create_session(
        rt.engine, tenant_id=caller.tenant_id, length=body.size, metadata={"_presigned": True},
        filename=safe_filename(body.filename), created_by=caller.label, expires_in=body.expires_in,
        storage_key=key)
    url = rt.storage.presign_put(key, expires=body.expires_in, content_type=body.content_type)
    headers = {"Content-Type": body.content_type} if body.content_type else {}
    if url is None:
        expires_at = int(time.time()) + body.expires_in
        sig = signing.sign(rt.settings, f"upload:{session['id']}", expires_at)
        url = f"{base_url(request)}/v1/uploads/{session['id']}/content?expires={expires_at}&signature={sig}"
    return {"upload_id": session["id"], "method": "PUT", "url": url, "headers": headers,
            "expires_at": iso(session["expires_at"]) or ""}


@router.put("/{upload_id}/content", status_code=201, response_model=UploadOut,
            openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}})
async def put_content(upload_id: str, request: Request, expires: int = Query(..., ge=0, le=2**53),
                      signature: str = Query(..., pattern="^[0-9a-f]{64}$")) -> dict[str, Any]:
    """The target of a local presigned URL: the signature authorizes, no API key is needed."""
    rt = runtime(request)
    signing.check(rt.settings, f"upload:{upload_id}", expires, signature)
    with rt.engine.connect() as conn:
        s = uploads_repo.get_session(conn, upload_id, tenant_id=None)
    if s["completed_at"] is not None or not s["storage_key"]:
        raise Conflict(f"upload {upload_id} is already complete")
    limit = s["upload_length"] if s["upload_length"] is not None else rt.settings.max_upload_bytes

    async def produce(pipe: Any) -> int:
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > limit:
                raise SourceTooLarge(f"more than {limit} bytes")
            await pipe.send(chunk)
        await pipe.end()
        return seen

    with upload_slot(request, f"tenant:{s['tenant_id']}"):
        info, _n = await run_with_pipe(lambda pipe: rt.storage.put(s["storage_key"], pipe), produce)  # type: ignore[arg-type]
    await blocking(uploads_repo.complete, rt.engine, upload_id, storage_key=info.key, size=info.size,
                   facts={"mime": await blocking(sniff_object, rt.storage, info.key), "sha256": info.checksum})
    return {"id": upload_id, "length": info.size, "offset": info.size, "complete": True, "filename": s["filename"],
            "expires_at": iso(s["expires_at"]), "job_id": None}


def remove_expired(request_or_runtime: Any) -> int:
    """Delete expired unfinished uploads and their stored bytes (returns how many)."""
    rt = request_or_runtime
    with rt.engine.connect() as conn:
        expired = uploads_repo.expired_sessions(conn)
    for s in expired:
        with contextlib.suppress(Exception):  # bytes this process cannot reach are another replica's to remove
            part_store(rt, s).remove(s)
        if s["storage_key"]:
            rt.storage.delete(s["storage_key"])
        uploads_repo.delete_session(rt.engine, s["id"])
    return len(expired)


