"""Local-folder storage: atomic writes (temp file + fsync + rename), folders 0700 and files 0600."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from mediamill.errors import NotFound
from mediamill.fsmode import PRIVATE_FILE, private_dir
from mediamill.storage.base import CHUNK, ObjectInfo, Storage, check_key


class LocalStorage(Storage):
    scheme = "file"

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
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
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
