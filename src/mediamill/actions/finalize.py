"""finalize_job: the job's manifest — every output with its size, checksum and metadata.

The engine publishes a job's outputs atomically when the job ends; this step only describes
them, so a consumer can verify a download against the manifest.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mediamill.actions.base import OutputFile, StepContext, StepResult, StoredOutput, action

_CHUNK = 1 << 20


class FinalizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="manifest.json", pattern=r"^[\w.-]+\.json$")


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def _entry(step: str, out: OutputFile) -> dict[str, Any]:
    path = Path(out.path)
    entry: dict[str, Any] = {"name": out.name, "step": step, "mime_type": out.mime_type,
                             "metadata": out.metadata}
    if isinstance(out, StoredOutput) and out.checksum and out.bytes is not None:
        # measured as the engine stored the very object a consumer downloads: no second read of every file
        entry["bytes"], entry["sha256"] = out.bytes, out.checksum
    elif path.is_file():
        entry["bytes"], entry["sha256"] = file_digest(path)
    else:
        entry["bytes"] = entry["sha256"] = None  # the engine did not hand this file to the step
    return entry


@action("finalize_job", params=FinalizeParams, family="generic", errors=("internal",), reads_input=False,
        reads_outputs=False)
def finalize_job(ctx: StepContext) -> StepResult:
    """Write manifest.json listing every earlier output (name, MIME type, bytes, sha256, metadata)."""
    entries = []
    for prior in ctx.previous:
        if prior.status == "completed":
            entries += [_entry(prior.name, out) for out in prior.outputs]
    manifest = {
        "job": {k: ctx.job.get(k) for k in ("id", "job_code") if k in ctx.job},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "outputs": entries,
        "steps": [{"name": p.name, "action": p.action, "status": p.status} for p in ctx.previous],
    }
    path = ctx.work_dir / ctx.params.name
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    total = sum(e["bytes"] or 0 for e in entries)
    ctx.progress(100.0)
    facts = {"outputs": len(entries), "total_bytes": total}
    return StepResult(outputs=[OutputFile(path.name, path, "application/json", facts)], data=facts)
