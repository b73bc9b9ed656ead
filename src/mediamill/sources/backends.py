"""Where source files come from: a folder (scanned, settled by size and mtime) or an S3-compatible
prefix (listed incrementally). Each backend lists file versions, copies one into storage, and
carries out the ``after`` policy; the intake decides when."""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mediamill.engine.submit import JobInput, sniff_object, store_input_file
from mediamill.errors import NotFound
from mediamill.sources.models import SourceSpec, matches, split_s3_url
from mediamill.storage import Storage, new_key


class Unreadable(Exception):
    """The file exists but cannot be read (permissions, I/O error): report it, never retry it."""


class Vanished(Exception):
    """The file is gone, or is no longer the version that was recorded."""


@dataclass(frozen=True)
class FileVersion:
    """One version of one file: what ``source_files`` remembers."""

    path: str  # relative to the folder (with /), or the object key
    fingerprint: str
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {"path": self.path, "fingerprint": self.fingerprint, "size": self.size, "mtime": self.mtime,
                "etag": self.etag}


# ------------------------------------------------------------------------------ folders
class FolderBackend:
    """A local or mounted folder. A file is complete once its size and mtime held for ``settle`` seconds."""

    def __init__(self, spec: SourceSpec, *, settle: float) -> None:
        self.spec = spec
        self.root = Path(spec.path or "/")
        self.settle = settle
        self._watch: dict[str, tuple[int, int, float]] = {}  # path → (size, mtime_ns, unchanged since)
        self._closed: dict[str, tuple[int, int]] = {}  # path → (size, mtime_ns) right after its writer closed it
        self._closed_lock = threading.Lock()
        self._skip_dirs = {Path(d).resolve() for d in (spec.done_location(), spec.failed_location())}

    def _walk(self) -> Iterator[Path]:
        if not self.spec.recursive:
            with os.scandir(self.root) as it:
                yield from (Path(e.path) for e in it if e.is_file())
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")
                           and (here / d).resolve() not in self._skip_dirs]
            yield from (here / f for f in filenames)

    def scan(self) -> tuple[list[FileVersion], float | None]:
        """Settled files, and how soon an unsettled one should be looked at again (None: nothing waits)."""
        now = time.monotonic()
        settled: list[FileVersion] = []
        seen: set[str] = set()
        next_check: float | None = None
        for full in self._walk():
            rel = full.relative_to(self.root).as_posix()
            if not matches(self.spec.patterns, rel):
                continue
            probe = _probe(full)
            if probe is None:
                continue  # removed between listing and stat, or not a regular file (FIFO, socket, device)
            seen.add(rel)
            size, mtime_ns, fingerprint = probe
            prev = self._watch.get(rel)
            since = prev[2] if prev and prev[:2] == (size, mtime_ns) else now
            self._watch[rel] = (size, mtime_ns, since)
            with self._closed_lock:
                closed = self._closed.get(rel) == (size, mtime_ns)
            left = 0.0 if closed else self.settle - (now - since)
            if left <= 0:
                settled.append(FileVersion(rel, fingerprint, size=size if size >= 0 else None, mtime=mtime_ns / 1e9))
            else:
                next_check = left if next_check is None else min(next_check, left)
        self._watch = {k: v for k, v in self._watch.items() if k in seen}
        with self._closed_lock:
            self._closed = {k: v for k, v in self._closed.items() if k in seen}
        return settled, next_check

    def closed_after_writing(self, full: Path) -> None:
        """The writer closed the file (or renamed it into place): it is complete as long as it stays as it is
        now, so the next scan takes it without waiting for it to settle."""
        try:
            rel = full.relative_to(self.root).as_posix()
            st = full.stat()
        except (ValueError, OSError):
            return
        if stat.S_ISREG(st.st_mode):
            with self._closed_lock:
                self._closed[rel] = (st.st_size, st.st_mtime_ns)

    def _current(self, row: dict[str, Any]) -> Path:
        full: Path = self.root / row["path"]
        probe = _probe(full)
        if probe is None:
            raise Vanished("the file is gone")
        if probe[2] != row["fingerprint"]:
            raise Vanished("the file changed after it was seen; its new version is taken on its own")
        if probe[0] < 0:
            raise Unreadable(f"cannot read: a link to a missing file ({os.readlink(full)})")
        return full

    def store(self, row: dict[str, Any], storage: Storage, tenant_id: str) -> JobInput:
        """Copy the file into storage (sniffing its type from its bytes)."""
        full = self._current(row)
        try:
            job_input = store_input_file(storage, full, tenant_id=tenant_id, filename=full.name)
        except (PermissionError, IsADirectoryError) as exc:
            raise Unreadable(f"cannot read: {exc.strerror or exc}") from exc
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise Vanished("the file is gone") from exc
            raise Unreadable(f"cannot read: {exc.strerror or exc}") from exc
        try:
            self._current(row)
        except Vanished:
            if job_input.storage_key:
                storage.delete(job_input.storage_key)
            raise
        return job_input

    def finish(self, row: dict[str, Any], *, succeeded: bool) -> str:
        """Apply ``after`` to a file whose job is over; returns what was done."""
        full = self.root / row["path"]
        after = self.spec.after
        if after == "keep" or (after == "delete" and not succeeded):
            return "kept"
        if not full.exists():
            return "gone"
        if after == "delete":
            full.unlink()
            return "deleted"
        target_root = Path(self.spec.done_location() if succeeded else self.spec.failed_location())
        dest = _free_name(target_root / row["path"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(full), str(dest))
        return "moved"

    def watch_root(self) -> Path:
        return self.root


def _probe(full: Path) -> tuple[int, int, str] | None:
    """(size, mtime_ns, fingerprint) of a regular file; a dangling link is (-1, its own mtime, "broken:…") so it
    is reported as unreadable once instead of being ignored; None for anything else."""
    try:
        st = full.stat()
    except FileNotFoundError:
        try:
            link = full.lstat()
        except OSError:
            return None
        return -1, link.st_mtime_ns, f"broken:{link.st_mtime_ns}"
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns, f"{st.st_size}:{st.st_mtime_ns}"


def _free_name(dest: Path) -> Path:
    """``dest``, or ``name (2).ext`` … when a file of that name is already there (a re-delivered file)."""
    if not dest.exists():
        return dest
    n = 2
    while (candidate := dest.with_name(f"{dest.stem} ({n}){dest.suffix}")).exists():
        n += 1
    return candidate


# ------------------------------------------------------------------------------ buckets
class BucketBackend:
    """An S3-compatible prefix, listed in key order from a stored high-water mark."""

    def __init__(self, spec: SourceSpec, *, client: Any | None = None) -> None:
        self.spec = spec
        self.bucket, self.prefix = split_s3_url(spec.url or "")
        self._client = client
        self._skip = tuple(p for p in (self._prefix_of(spec.done_location()), self._prefix_of(spec.failed_location()))
                           if p)

    @property
    def client(self) -> Any:
        """The S3 client, made on first use (deciding which keys are wanted needs none)."""
        if self._client is None:
            from mediamill.storage.s3 import s3_client

            self._client = s3_client()
        return self._client

    def _prefix_of(self, url: str) -> str:
        bucket, prefix = split_s3_url(url)
        return prefix if bucket == self.bucket else ""

    def wanted(self, key: str) -> bool:
        """Is an object key one this source takes (under the prefix, matching, not a done/failed copy)?"""
        if not key.startswith(self.prefix) or key.endswith("/") or key.startswith(self._skip):
            return False
        rel = key[len(self.prefix):]
        if not self.spec.recursive and "/" in rel:
            return False
        return matches(self.spec.patterns, rel)

    def list_page(self, *, start_after: str | None, token: str | None,
                  page_size: int = 1000) -> tuple[list[FileVersion], str | None, str | None]:
        """One page of the listing: (wanted versions, continuation token, the page's last key)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": page_size}
        if token:
            kwargs["ContinuationToken"] = token
        elif start_after:
            kwargs["StartAfter"] = start_after
        page = self.client.list_objects_v2(**kwargs)
        contents = page.get("Contents", [])
        versions = [version_of(o["Key"], o.get("ETag"), o.get("Size")) for o in contents if self.wanted(o["Key"])]
        last = contents[-1]["Key"] if contents else None
        return versions, page.get("NextContinuationToken") if page.get("IsTruncated") else None, last

    def head(self, key: str) -> FileVersion:
        meta = self.client.head_object(Bucket=self.bucket, Key=key)
        return version_of(key, meta.get("ETag"), meta.get("ContentLength"))

    def store(self, row: dict[str, Any], storage: Storage, tenant_id: str) -> JobInput:
        """Copy the object into storage: server-side when storage is S3 too, else streamed."""
        from mediamill.storage.s3 import S3Storage

        key = new_key("inputs", tenant_id)
        try:
            if isinstance(storage, S3Storage):
                info = storage.copy_in(key, bucket=self.bucket, source_key=row["path"])
            else:
                body = self.client.get_object(Bucket=self.bucket, Key=row["path"], IfMatch=f'"{row["etag"]}"')["Body"]
                try:
                    info = storage.put(key, body)
                finally:
                    body.close()
        except NotFound as exc:
            raise Vanished("the object is gone") from exc
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "PreconditionFailed", "412"):
                raise Vanished("the object is gone or was replaced") from exc
            if code in ("AccessDenied", "403", "InvalidObjectState"):
                raise Unreadable(f"cannot read s3://{self.bucket}/{row['path']}: {code}") from exc
            raise
        name = PurePosixPath(row["path"]).name
        return JobInput(storage_key=info.key, filename=name, mime=sniff_object(storage, info.key), size=info.size,
                        checksum=info.checksum or row.get("etag"))

    def finish(self, row: dict[str, Any], *, succeeded: bool) -> str:
        after = self.spec.after
        if after == "keep" or (after == "delete" and not succeeded):
            return "kept"
        if after == "move":
            bucket, prefix = split_s3_url(self.spec.done_location() if succeeded else self.spec.failed_location())
            rel = row["path"][len(self.prefix):]
            self.client.copy({"Bucket": self.bucket, "Key": row["path"]}, bucket or self.bucket, prefix + rel)
        self.client.delete_object(Bucket=self.bucket, Key=row["path"])
        return "moved" if after == "move" else "deleted"


def version_of(key: str, etag: str | None, size: int | None) -> FileVersion:
    tag = (etag or "").strip('"')
    return FileVersion(key, f"etag:{tag}" if tag else f"size:{size}", size=size, etag=tag or None)


def backend_for(spec: SourceSpec, *, settle: float) -> FolderBackend | BucketBackend:
    return FolderBackend(spec, settle=settle) if spec.kind == "folder" else BucketBackend(spec)
