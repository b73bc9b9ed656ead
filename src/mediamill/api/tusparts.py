"""Where an unfinished tus upload's bytes live, so that any API replica can continue it.

A tus upload may start on one API replica and be resumed on another (a load balancer does not
keep a client on one replica). So the bytes of an unfinished upload are kept where every
replica sees them, and the database says exactly what is there (``upload_sessions.part_state``,
written together with ``upload_offset`` under the upload's PATCH claim):

* **S3 storage** — an S3 multipart upload on the final object's key. PATCH bodies are cut into
  parts of at least :data:`PART_SIZE` (S3 wants ≥ 5 MiB for every part but the last); the bytes
  of a PATCH that do not fill a part are kept as a *pending* object in the bucket, and once the
  pending objects and a later PATCH's bytes — on whichever replica — fill a part, they go up as
  that part. The state lists the part numbers, ETags and sizes and the pending objects' keys and
  sizes.
* **Local storage** — a part file in the uploads folder (``MEDIAMILL_UPLOADS_DIR``, default
  ``data_dir/uploads``), beside a marker file holding a random token the database also holds.
  Replicas share the folder (one volume) or they cannot continue each other's uploads: a
  replica that does not find the marker answers 409 instead of writing at an offset its part
  file does not have (which once produced files whose first half was zeros).

Every PATCH first checks that the recorded bytes are there (marker and size, or the pending
objects' sizes); 409 when this replica cannot see them, 410 when they are gone. Completion
assembles the object and checks its stored size against ``Upload-Length``; its sha256 is the
hash kept while one process received every byte in order, else read back from what was stored,
so a checksum always describes the bytes a job will read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mediamill.errors import BytesLost, BytesUnreachable, MediamillError
from mediamill.fsmode import private_dir
from mediamill.storage import new_key
from mediamill.storage.base import CHUNK, Storage

MiB = 1024 * 1024
#: the smallest S3 part mediamill writes (S3's own minimum is 5 MiB, the last part excepted)
PART_SIZE = 8 * MiB
#: S3 allows 10,000 parts per upload; parts grow for larger uploads so that they fit with room
MAX_PARTS = 9000
WRITE_BUFFER = MiB


class Appender(ABC):
    """One PATCH's bytes: ``write`` (blocking, in a thread), then ``commit`` once the database
    recorded ``state`` with the new offset, or ``rollback`` when the bytes must not count."""

    state: dict[str, Any] | None

    @abstractmethod
    def write(self, pipe: Any) -> int:
        """Take what the pipe brings; the number of bytes."""

    def commit(self) -> None:  # noqa: B027  (nothing to tidy for a part file)
        """The new state is recorded: remove what it replaced."""

    @abstractmethod
    def rollback(self) -> None:
        """Forget this PATCH's bytes (the recorded state stays valid)."""


class PartStore(ABC):
    """Where the unfinished bytes of uploads are kept (see the module docstring)."""

    @abstractmethod
    def create(self, upload_id: str, tenant_id: str) -> dict[str, Any]:
        """Prepare a new upload; its initial ``part_state``."""

    @abstractmethod
    def check(self, session: dict[str, Any]) -> None:
        """BytesUnreachable / BytesLost unless the recorded bytes are here, exactly ``upload_offset`` of them."""

    @abstractmethod
    def appender(self, session: dict[str, Any], offset: int, hashers: list[Any],
                 guard: Callable[[], None] | None = None) -> Appender:
        """The writer of one PATCH at ``offset``; ``guard`` raises when the PATCH lost its claim."""

    @abstractmethod
    def assemble(self, session: dict[str, Any], sha256: str | None) -> tuple[str, int, str]:
        """Make the complete upload a stored object: (key, size, sha256 of the stored bytes).

        ``sha256``: the hash of the bytes kept while they arrived, when this process saw all of
        them in order (a local part file is then not read again)."""

    @abstractmethod
    def remove(self, session: dict[str, Any]) -> None:
        """Delete an unfinished upload's bytes (termination, expiry)."""


def store_for(storage: Storage, uploads_dir: Path, max_upload_bytes: int,
              session: dict[str, Any] | None = None) -> PartStore:
    """The part store of a session (by its recorded kind) or, for a new upload, of the configured storage."""
    kind = (session.get("part_state") or {}).get("kind", "file") if session is not None else None
    if kind == "s3" or (kind is None and storage.scheme == "s3"):
        return S3Parts(storage, max_upload_bytes)
    return FileParts(uploads_dir, storage)


def _upload_length_mismatch(session: dict[str, Any], size: int) -> BytesLost:
    return BytesLost(f"the assembled upload has {size} bytes, not its Upload-Length of {session['upload_length']}; "
                     "nothing was stored: upload the file again")


# ------------------------------------------------------------------------------ local folder
class FileParts(PartStore):
    """A part file and a marker file per upload in the (shared) uploads folder."""

    def __init__(self, folder: Path, storage: Storage) -> None:
        self.folder = folder
        self.storage = storage

    def part(self, upload_id: str) -> Path:
        return self.folder / f"{upload_id}.part"

    def marker(self, upload_id: str) -> Path:
        return self.folder / f"{upload_id}.marker"

    def create(self, upload_id: str, tenant_id: str) -> dict[str, Any]:
        token = secrets.token_hex(16)
        private_dir(self.folder)
        self.part(upload_id).touch()
        marker = self.marker(upload_id)
        marker.write_text(token)
        os.chmod(marker, 0o600)
        return {"kind": "file", "marker": token}

    def check(self, session: dict[str, Any]) -> None:
        upload_id, offset = session["id"], session["upload_offset"]
        expected = (session.get("part_state") or {}).get("marker")
        part = self.part(upload_id)
        if expected is not None:
            try:
                found = self.marker(upload_id).read_text().strip()
            except FileNotFoundError:
                found = None
            if found != expected:
                raise BytesUnreachable(
                    f"this API server does not hold the bytes of upload {upload_id}: its uploads folder is not the "
                    "one the upload started in. API replicas must share MEDIAMILL_UPLOADS_DIR (or use S3 storage); "
                    "resume the upload where it started")
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            if expected is None:  # an upload from before markers: nothing tells lost from elsewhere
                raise BytesUnreachable(f"this API server does not hold the bytes of upload {upload_id}") from None
            raise BytesLost(f"the stored bytes of upload {upload_id} are gone; upload the file again") from None
        if size < offset:
            raise BytesLost(f"upload {upload_id} has {size} stored bytes, fewer than its offset {offset}; "
                            "upload the file again")
        if size > offset:  # a PATCH that died between writing and recording: its bytes never counted
            with part.open("r+b") as fh:
                fh.truncate(offset)

    def appender(self, session: dict[str, Any], offset: int, hashers: list[Any],
                 guard: Callable[[], None] | None = None) -> Appender:
        return _FileAppender(self.part(session["id"]), offset, hashers, session.get("part_state"))

    def assemble(self, session: dict[str, Any], sha256: str | None) -> tuple[str, int, str]:
        """The part file becomes the stored object through ``Storage.put_file(move=True)``: renamed when
        storage is a local folder on the same filesystem, else uploaded (its hash is taken there)."""
        path = self.part(session["id"])
        key = new_key("uploads", session["tenant_id"])
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise BytesLost(f"the stored bytes of upload {session['id']} are gone; upload the file again") from None
        if session["upload_length"] is not None and size != session["upload_length"]:
            raise _upload_length_mismatch(session, size)
        # a local folder renames the part into place (no copy of a multi-GB file, stored 0600); another
        # store uploads it through the interface
        info = self.storage.put_file(key, path, move=True)
        return key, info.size, info.checksum or ""

    def remove(self, session: dict[str, Any]) -> None:
        self.part(session["id"]).unlink(missing_ok=True)
        self.marker(session["id"]).unlink(missing_ok=True)


class _FileAppender(Appender):
    def __init__(self, path: Path, offset: int, hashers: list[Any], state: dict[str, Any] | None) -> None:
        self.path, self.offset, self.hashers, self.state = path, offset, hashers, state

    def write(self, pipe: Any) -> int:
        """Append at the offset; the file must exist (``r+b``): a missing one is never recreated
        and padded with zeros up to the offset."""
        written = 0
        try:
            fh = self.path.open("r+b", buffering=WRITE_BUFFER)
        except FileNotFoundError:
            raise BytesLost(f"the stored bytes of upload {self.path.stem} are gone; upload the file again") from None
        with fh:
            fh.seek(self.offset)
            while chunk := pipe.read(WRITE_BUFFER):
                fh.write(chunk)
                written += len(chunk)
                for h in self.hashers:
                    h.update(chunk)
        return written

    def rollback(self) -> None:
        with contextlib.suppress(FileNotFoundError), self.path.open("r+b") as fh:
            fh.truncate(self.offset)


# ------------------------------------------------------------------------------ S3
def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3Parts(PartStore):
    """An S3 multipart upload per tus upload, plus pending objects for the bytes short of a part."""

    def __init__(self, storage: Any, max_upload_bytes: int) -> None:
        self.storage = storage
        self.max_upload_bytes = max_upload_bytes
        self.client = storage.client
        self.bucket = storage.bucket

    def _k(self, key: str) -> str:
        return str(self.storage._k(key))

    def create(self, upload_id: str, tenant_id: str) -> dict[str, Any]:
        # the multipart upload starts with the first full part: small uploads never need one
        return {"kind": "s3", "key": new_key("uploads", tenant_id), "mpu": None, "parts": [], "pending": []}

    def check(self, session: dict[str, Any]) -> None:
        state = session.get("part_state") or {}
        pending = state.get("pending", [])
        stored = sum(p[2] for p in state.get("parts", [])) + sum(size for _key, size in pending)
        if stored != session["upload_offset"]:
            raise BytesLost(f"upload {session['id']} records {stored} stored bytes at offset "
                            f"{session['upload_offset']}; upload the file again")
        if not pending:
            return
        prefix = self._k(f"tus/{session['id']}") + "/"  # a folder, not a key: checked without its slash
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        found = {obj["Key"]: int(obj["Size"]) for page in pages for obj in page.get("Contents", [])}
        if any(found.get(self._k(key)) != size for key, size in pending):
            raise BytesLost(f"the stored bytes of upload {session['id']} are gone or do not match its offset; "
                            "upload the file again")

    def part_size(self, session: dict[str, Any]) -> int:
        length = session["upload_length"] if session["upload_length"] is not None else self.max_upload_bytes
        return max(PART_SIZE, -(-length // MAX_PARTS))

    def appender(self, session: dict[str, Any], offset: int, hashers: list[Any],
                 guard: Callable[[], None] | None = None) -> Appender:
        return _S3Appender(self, session, offset, hashers, guard)

    def read_pending(self, pending: list[list[Any]]) -> bytes:
        """The pending objects' bytes, in order (each must have its recorded size)."""
        out = bytearray()
        for key, size in pending:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"]
            except Exception as exc:
                if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    raise BytesLost("the stored bytes of the upload are gone; upload the file again") from None
                raise
            data = body.read()
            if len(data) != size:
                raise BytesLost("the stored bytes of the upload do not match its offset; upload the file again")
            out += data
        return bytes(out)

    def upload_part(self, state: dict[str, Any], number: int, data: bytes) -> list[Any]:
        """Send one part (starting the multipart upload first when there is none); its [number, etag, size]."""
        if state["mpu"] is None:
            started = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._k(state["key"]))
            state["mpu"] = started["UploadId"]
        try:
            res = self.client.upload_part(Bucket=self.bucket, Key=self._k(state["key"]), UploadId=state["mpu"],
                                          PartNumber=number, Body=data)
        except Exception as exc:
            if _code(exc) == "NoSuchUpload":
                raise BytesLost("the upload's multipart upload in the bucket is gone (aborted or expired); "
                                "upload the file again") from None
            raise
        return [number, res["ETag"], len(data)]

    def put_pending(self, upload_id: str, data: bytes) -> list[Any]:
        key = f"tus/{upload_id}/pending-{secrets.token_hex(8)}"
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)
        return [key, len(data)]

    def delete_objects(self, keys: list[str]) -> None:
        for key in keys:
            with contextlib.suppress(Exception):
                self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def assemble(self, session: dict[str, Any], sha256: str | None) -> tuple[str, int, str]:
        state = dict(session.get("part_state") or {})
        key, pending = state["key"], state.get("pending", [])
        try:
            if state["mpu"] is None:  # a small upload: its pending bytes are the whole object
                if len(pending) == 1:
                    self.client.copy_object(Bucket=self.bucket, Key=self._k(key),
                                            CopySource={"Bucket": self.bucket, "Key": self._k(pending[0][0])})
                else:
                    self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=self.read_pending(pending))
            else:
                parts = list(state["parts"])
                if pending:
                    parts.append(self.upload_part(state, len(parts) + 1, self.read_pending(pending)))
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=self._k(key), UploadId=state["mpu"],
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag, _size in parts]})
        except MediamillError:
            raise
        except Exception as exc:
            if _code(exc) in ("NoSuchUpload", "InvalidPart", "InvalidPartOrder", "NoSuchKey", "EntityTooSmall"):
                raise BytesLost(f"the stored parts of upload {session['id']} cannot be assembled ({_code(exc)}); "
                                "upload the file again") from None
            raise
        self.delete_objects([k for k, _size in pending])
        size, digest = self._measure(key) if sha256 is None else (self.storage.size(key), sha256)
        if session["upload_length"] is not None and size != session["upload_length"]:
            self.storage.delete(key)
            raise _upload_length_mismatch(session, size)
        return key, size, digest

    def _measure(self, key: str) -> tuple[int, str]:
        """Size and sha256 of the assembled object, read back from the bucket when the parts came
        through several replicas (or a restart): the checksum a job relies on describes what is
        stored. When this process received every byte in order, the hash it kept on the way is
        used instead — S3 checked each part's bytes against its ETag when they were sent."""
        digest, size = hashlib.sha256(), 0
        for chunk in self.storage.iter_bytes(key):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def remove(self, session: dict[str, Any]) -> None:
        state = session.get("part_state") or {}
        if state.get("mpu"):
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._k(state["key"]),
                                                   UploadId=state["mpu"])
        self.delete_objects([k for k, _size in state.get("pending", [])])


class _S3Appender(Appender):
    """Cuts a PATCH body into parts. Bytes short of a part are kept as one more pending object (a
    PATCH only ever uploads its own bytes there); once pending and new bytes fill a part, they go
    up as that part and the pending objects are dropped.

    Parts this PATCH sent are only counted once the database records them with the new offset;
    a refused PATCH leaves them unlisted and the next writer sends the same part numbers again.
    Before each part the claim is confirmed (``guard``), so a writer that lost it stops before it
    could overwrite a part of the upload's new writer.
    """

    def __init__(self, parts: S3Parts, session: dict[str, Any], offset: int, hashers: list[Any],
                 guard: Callable[[], None] | None) -> None:
        self.parts, self.session, self.offset, self.hashers, self.guard = parts, session, offset, hashers, guard
        self.old = dict(session.get("part_state") or {})
        self.state = None
        self.created: list[str] = []  # pending objects this PATCH wrote
        self.work: dict[str, Any] = {**self.old, "parts": list(self.old.get("parts", [])),
                                     "pending": list(self.old.get("pending", []))}

    def write(self, pipe: Any) -> int:
        state = self.work
        size = self.parts.part_size(self.session)
        buffer = bytearray()
        added = 0
        while chunk := pipe.read(CHUNK):
            added += len(chunk)
            for h in self.hashers:
                h.update(chunk)
            buffer += chunk
            if sum(s for _k, s in state["pending"]) + len(buffer) >= size:
                data = self.parts.read_pending(state["pending"]) + bytes(buffer)
                if self.guard is not None:
                    self.guard()
                state["parts"].append(self.parts.upload_part(state, len(state["parts"]) + 1, data))
                state["pending"], buffer = [], bytearray()
        if buffer:
            entry = self.parts.put_pending(self.session["id"], bytes(buffer))
            self.created.append(entry[0])
            state["pending"].append(entry)
        self.state = state if added else self.old
        return added

    def commit(self) -> None:
        kept = {k for k, _size in (self.state or {}).get("pending", [])}
        self.parts.delete_objects([k for k, _size in self.old.get("pending", []) if k not in kept])

    def rollback(self) -> None:
        self.parts.delete_objects(self.created)
        if self.old.get("mpu") is None and self.work.get("mpu"):  # started here, recorded nowhere
            self.parts.remove({"part_state": {"mpu": self.work["mpu"], "key": self.work["key"]}})
        self.state = None
