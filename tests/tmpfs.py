"""A small tmpfs mounted for a test or benchmark that needs a full disk (root only), unmounted afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


class TmpfsUnavailable(RuntimeError):
    """This machine (or user) cannot mount a tmpfs."""


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """Mount a ``size_mb`` tmpfs (mode 0700) on ``path``; raises TmpfsUnavailable when it cannot."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise TmpfsUnavailable("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise TmpfsUnavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def grow(path: Path, size_mb: int) -> None:
    """Give a mounted tmpfs room again (``size_mb`` in all)."""
    subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(path)], check=True, capture_output=True)


@contextlib.contextmanager
def small_tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """``mounted_tmpfs`` for a test: skips with the reason where the machine cannot mount one."""
    import pytest

    try:
        cm = mounted_tmpfs(path, size_mb)
        mounted = cm.__enter__()
    except TmpfsUnavailable as exc:
        pytest.skip(f"{exc}; the full-disk test runs where it can")
    try:
        yield mounted
    finally:
        cm.__exit__(None, None, None)
