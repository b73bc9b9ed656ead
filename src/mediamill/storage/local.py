"""Local-folder storage: atomic writes (temp file + fsync + rename), folders 0700 and files 0600."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from mediamill.errors import NotFound, StorageFull
from mediamill.fsmode import PRIVATE_FILE, private_dir
from mediamill.storage.base import CHUNK, NO_SPACE, ObjectInfo, Storage, StorageHealth, check_key, full_disk

MB = 1024 * 1024


class LocalStorage(Storage):
    scheme = "file"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def health(self) -> StorageHealth:
        free = self.free_bytes()
        ok = free >= self.min_free_bytes
        problem = None if ok else (f"free space {free // MB} MB is below the floor of {self.min_free_bytes // MB} MB "
                                   "(MEDIAMILL_STORAGE_MIN_FREE_MB)")
        return StorageHealth(ok=ok, backend=self.scheme, problem=problem, free_bytes=free,
                             min_free_bytes=self.min_free_bytes)

    def check_room(self) -> None:
        if self.min_free_bytes and self.free_bytes() < self.min_free_bytes:
            raise StorageFull("the server's storage is nearly full; new files are refused until space is freed. "
                              "Try again later.")

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        private_dir(self.root / ".tmp")

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise NotFound(f"no object {key!r}")
        return path

    def put(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> ObjectInfo:
        dest = self._path(key)
        private_dir(dest.parent)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root / ".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in NO_SPACE:
                raise full_disk() from exc
            raise
        return ObjectInfo(key=key, size=size, checksum=digest.hexdigest())

    def put_file(self, key: str, path: Path, *, content_type: str | None = None, move: bool = False) -> ObjectInfo:
        if not move:
            return super().put_file(key, path, content_type=content_type)
        dest = self._path(key)
        private_dir(dest.parent)
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as fh:  # hash and make durable in place, then a rename instead of a copy
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(fh.fileno())
        try:
            os.chmod(path, PRIVATE_FILE)  # a scratch file made under the umask; stored objects are 0600
            os.replace(path, dest)
        except OSError:  # another filesystem: copy after all
            return super().put_file(key, path, content_type=content_type)
        return ObjectInfo(key=key, size=size, checksum=digest.hexdigest())

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise NotFound(f"no object {key!r}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(f"no object {key!r}") from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)
