"""Linux inotify for one thing ``watchfiles`` does not report: a file was *closed after writing*
(``IN_CLOSE_WRITE``) or *renamed into place* (``IN_MOVED_TO``, how rsync and atomic writers finish).

Either means the writer is done, so a folder source may take the file at once instead of waiting
for its size and mtime to hold still. It is only a shortcut: the file is taken only while its size
and mtime are still those seen right after the close, and everything else falls back to the
stability rule. Elsewhere than Linux, :func:`available` is False and nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_ISDIR = 0x40000000
IN_IGNORED = 0x00008000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")
_MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF


def available() -> bool:
    return sys.platform.startswith("linux") and ctypes.util.find_library("c") is not None


class CloseWatcher:
    """Calls ``on_done(path)`` for every file of ``root`` (and, with ``recursive``, its sub-folders) that was
    closed after writing or moved in. Runs in the caller's thread until ``stop`` is set."""

    def __init__(self, root: Path, *, recursive: bool, on_done: Callable[[Path], None]) -> None:
        self.root = root
        self.recursive = recursive
        self.on_done = on_done
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._dirs: dict[int, Path] = {}

    def _add(self, directory: Path) -> None:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR):
                return  # gone already
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
        self._dirs[wd] = directory
        if self.recursive:
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink() and not child.name.startswith("."):
                    self._add(child)

    def run(self, stop: threading.Event) -> None:
        try:
            self._add(self.root)
            while not stop.is_set():
                ready, _, _ = select.select([self._fd], [], [], 0.5)
                if ready:
                    self._drain()
        finally:
            os.close(self._fd)

    def _drain(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            raw = data[offset + _HEADER.size: offset + _HEADER.size + length].split(b"\0", 1)[0]
            offset += _HEADER.size + length
            self._event(wd, mask, os.fsdecode(raw))

    def _event(self, wd: int, mask: int, name: str) -> None:
        directory = self._dirs.get(wd)
        if directory is None or mask & IN_IGNORED:
            self._dirs.pop(wd, None)
            return
        path = directory / name
        if mask & IN_ISDIR:
            if mask & (IN_CREATE | IN_MOVED_TO) and self.recursive and not name.startswith("."):
                self._add(path)
            return
        if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
            self.on_done(path)
