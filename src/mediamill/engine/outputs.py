"""Saving a job's outputs to a folder under their own names (``mediamill outputs``).

Names may contain ``/`` (an HLS ladder: ``hls/720p/seg_00001.ts``) and become sub-folders; a name
that would leave the folder is refused. Files are checked against their recorded size and sha256,
written beside their destination first and moved into place, so an interrupted download never
leaves a half file under the real name. A different file already at a destination is never
overwritten unless asked; an identical one is left as it is.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from mediamill.errors import Conflict, InternalError, InvalidInput, NotFound
from mediamill.store import job_rows
from mediamill.store.db import Engine

CHUNK = 1024 * 1024
Opener = Callable[[dict[str, Any]], BinaryIO]


def find_job_id(engine: Engine, ref: str) -> int:
    """A job's id from its id or its code (``JOB-…``)."""
    if ref.isdigit():
        return int(ref)
    with engine.connect() as conn:
        found = job_rows.job_id_by_code(conn, ref)
    if found is None:
        raise NotFound(f"no job {ref!r}")
    return found


def destination(folder: Path, name: str) -> Path:
    """Where the output ``name`` goes inside ``folder``; refuses names that would leave it."""
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or "\\" in name or "\x00" in name or \
            any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"output name {name!r} cannot be saved as a file")
    return folder.joinpath(*parts)


def save_outputs(outputs: Iterable[dict[str, Any]], folder: Path, open_output: Opener, *,
                 overwrite: bool = False) -> list[dict[str, Any]]:
    """Save every output into ``folder``; returns one row per output (name, path, bytes, sha256, action)."""
    plan = [(out, destination(folder, out["name"])) for out in outputs]
    clashes = [str(path) for out, path in plan if path.exists() and not _same(path, out)]
    if clashes and not overwrite:
        raise Conflict(f"{len(clashes)} file(s) exist with other content (use --overwrite): {', '.join(clashes[:5])}")
    rows = []
    for out, path in plan:
        action = "unchanged" if path.exists() and _same(path, out) else "written"
        if action == "written":
            _write(path, out, open_output)
        rows.append({"name": out["name"], "path": str(path), "bytes": out.get("bytes"),
                     "sha256": out.get("checksum"), "action": action})
    return rows


def _same(path: Path, out: dict[str, Any]) -> bool:
    if not path.is_file() or not out.get("checksum"):
        return False
    return path.stat().st_size == out.get("bytes") and _sha256(path) == out["checksum"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write(path: Path, out: dict[str, Any], open_output: Opener) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    digest, size = hashlib.sha256(), 0
    try:
        with open_output(out) as src, partial.open("wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        if out.get("checksum") and (digest.hexdigest() != out["checksum"] or size != out.get("bytes")):
            raise InternalError(f"output {out['name']!r} in storage does not match its recorded size and sha256")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
