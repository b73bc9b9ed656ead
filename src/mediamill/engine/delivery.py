"""The ``deliver`` step: copy a finished job's outputs to where the application serves them.

A workflow's ``deliver:`` (or the job's allowed override) names a destination template —
``s3://bucket/prefix/{input_stem}/{output}`` or ``/srv/media/{job_code}/{output}``. The step
runs last, like any step: recorded, retried through the queue with back-off when the
destination fails, visible on the job page. It is idempotent: an output already delivered to
the same place (``job_outputs.delivered_url``) is not copied again, so a retry only finishes
what is left. Copies are server-side where the store allows it (S3 to S3 ``CopyObject``;
a kernel-side file copy between local folders).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mediamill.errors import Forbidden, InvalidInput, MediamillError, TransientError
from mediamill.storage import Storage
from mediamill.store import delivery_repo, tenant_settings
from mediamill.store import lifecycle as tx
from mediamill.store.db import Connection
from mediamill.store.timeutil import utcnow
from mediamill.workflows.models import DeliverDef
from mediamill.workflows.naming import render_template

if TYPE_CHECKING:
    from mediamill.engine.services import RunningJob

_UNSAFE_PART = re.compile(r"[^A-Za-z0-9._\-]+")


@dataclass(frozen=True)
class Target:
    """One output's destination."""

    url: str  # s3://bucket/key or file:///path — what the job's outputs list
    bucket: str | None = None
    key: str | None = None
    path: Path | None = None


def effective_spec(workflow_spec: DeliverDef | None, override: dict[str, Any] | None) -> DeliverDef | None:
    """The job's override (already checked against the tenant's allowed prefixes) wins over the workflow's."""
    if override:
        base = workflow_spec.model_dump() if workflow_spec else {}
        merged = {**base, **DeliverDef.model_validate(override).model_dump(exclude_unset=True)}
        return DeliverDef.model_validate(merged)
    return workflow_spec


def _slug(value: Any) -> str:
    """A template value as one safe path segment: no separators, no '..', nothing a shell or URL trips on."""
    text = _UNSAFE_PART.sub("_", str(value if value is not None else "")).strip("._") or "_"
    return text[:200]


def output_fields(job: dict[str, Any], workflow: str, output: dict[str, Any]) -> dict[str, Any]:
    """What ``deliver.to`` may use for one output. Every value is one safe segment, except ``output``, which
    keeps the output's own sub-folders (``hls/segment_001.ts``) made of safe segments."""
    name = str(output["name"])
    input_name = job.get("input_filename") or "input"
    metadata = job.get("job_metadata") or {}
    return {
        "job_code": _slug(job["job_code"]), "job_id": job["id"], "workflow": _slug(workflow),
        "input_stem": _slug(PurePosixPath(input_name).stem), "input_name": _slug(input_name),
        "input_ext": _slug(PurePosixPath(input_name).suffix.lstrip(".")),
        "step": _slug(output.get("step_name") or ""), "output": "/".join(_slug(p) for p in name.split("/")),
        "output_stem": _slug(PurePosixPath(name).stem), "ext": _slug(PurePosixPath(name).suffix.lstrip(".")),
        "date": utcnow().strftime("%Y/%m/%d"), "tenant": _slug(job.get("tenant_id") or "default"),
        "metadata": {k: _slug(v) for k, v in metadata.items() if not isinstance(v, dict | list)},
    }


def resolve_target(spec: DeliverDef, fields: dict[str, Any]) -> Target:
    try:
        rendered = render_template(spec.to, fields)
    except KeyError as exc:
        raise InvalidInput(f"deliver.to uses {{{exc.args[0]}}}, which this job does not have") from None
    if rendered.startswith("s3://"):
        bucket, _, key = rendered[5:].partition("/")
        key = re.sub(r"/{2,}", "/", key).lstrip("/")
        if not key or key.endswith("/"):
            raise InvalidInput(f"deliver.to renders to {rendered!r}, which names no object")
        return Target(url=f"s3://{bucket}/{key}", bucket=bucket, key=key)
    path = Path(rendered.removeprefix("file://"))
    root = Path(spec.static_prefix.removeprefix("file://") or "/")
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()) or ".." in path.parts:
        raise InvalidInput(f"deliver.to renders to {rendered!r}, outside {root}")
    return Target(url=resolved.as_uri(), path=resolved)


def allowed(prefixes: list[str] | None, spec: DeliverDef) -> bool:
    """Does the tenant's allow-list cover the destination? Folder prefixes match whole path components and S3
    prefixes whole buckets, so ``/srv/media`` does not allow ``/srv/media-private``."""
    want = spec.static_prefix
    for prefix in prefixes or []:
        if want.startswith("s3://") and prefix.startswith("s3://"):
            if want == prefix or want.startswith(prefix.rstrip("/") + "/"):
                return True
        elif not want.startswith("s3://") and not prefix.startswith("s3://"):
            base = Path(prefix.removeprefix("file://")).resolve()
            if Path(want.removeprefix("file://") or "/").resolve().is_relative_to(base):
                return True
    return False


def check_override(conn: Connection, tenant_id: str, raw: Any) -> dict[str, Any] | None:
    """A job's ``deliver`` override, validated and allowed by the tenant's settings (else a clear error)."""
    if raw is None:
        return None
    try:
        spec = DeliverDef.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput("deliver: " + "; ".join(e["msg"] for e in exc.errors())) from None
    if not allowed(tenant_settings.deliver_prefixes(conn, tenant_id), spec):
        raise Forbidden(f"deliver: {spec.static_prefix!r} is not under a prefix this tenant may deliver to "
                        "(an admin sets them: PUT /v1/delivery/prefixes)")
    return spec.model_dump(exclude_defaults=True) | {"to": spec.to}


# ------------------------------------------------------------------------------ the step
def deliver_outputs(runner: RunningJob, index: int, exec_id: int) -> dict[str, Any]:
    """Run the deliver step of a job; returns the step's result (its data lists what went where)."""
    job = runner.job
    with runner.svc.engine.connect() as conn:
        override, shadow_of = delivery_repo.deliver_override(conn, job["id"])
        rows = delivery_repo.job_outputs_of(conn, job["id"])
    if shadow_of is not None:  # a shadow run of a candidate version must not touch what users are served
        return {"outputs": [], "data": {"delivered": [], "reason": "shadow run: not delivered"}}
    spec = effective_spec(runner.d.deliver, override)
    if spec is None:
        return {"outputs": [], "data": {"delivered": [], "reason": "no deliver: destination"}}
    wanted = [r for r in rows if any(fnmatch.fnmatchcase(r["name"], p) for p in spec.outputs)]
    delivered: list[dict[str, str]] = []
    kept: list[dict[str, str]] = []
    for i, row in enumerate(wanted):
        target = resolve_target(spec, output_fields(job, runner.d.code, row))
        if row["delivered_url"] != target.url:
            outcome = _deliver_one(runner.svc.storage, row, target, spec)
            _record(runner, runner.steps[index].name, row, target, outcome)
            (delivered if outcome == "copied" else kept).append({"name": row["name"], "url": target.url})
        runner.progress(index, 100.0 * (i + 1) / max(1, len(wanted)), exec_id)
    return {"outputs": [], "data": {"delivered": delivered, "kept_existing": kept,
                                    "already_delivered": len(wanted) - len(delivered) - len(kept)}}


def _record(runner: RunningJob, step: str, row: dict[str, Any], target: Target, outcome: str) -> None:
    """The output's delivered URL and a ``delivery`` event, as soon as it is there (a retry skips it)."""
    with runner.svc.engine.begin() as conn:
        runner.guard(conn)
        delivery_repo.mark_delivered(conn, row["id"], target.url)
        tx.add_event(conn, runner.job, "delivery", step, {"output": row["name"], "url": target.url,
                                                          "outcome": outcome})


def _deliver_one(storage: Storage, row: dict[str, Any], target: Target, spec: DeliverDef) -> str:
    """Copy one output; returns ``copied`` or ``kept`` (an existing object left alone by the policy)."""
    content_type = spec.content_type or row["mime_type"] or "application/octet-stream"
    try:
        if target.bucket is not None:
            return _to_bucket(storage, row["storage_key"], target, spec.overwrite, content_type)
        return _to_folder(storage, row["storage_key"], target, spec.overwrite)
    except MediamillError:
        raise
    except Exception as exc:  # the destination is down, full, or refuses us: worth another try later
        raise TransientError(f"delivering {row['name']} to {target.url} failed: {exc}") from exc


def _exists_conflict(exists: bool, overwrite: str, url: str) -> str | None:
    if not exists or overwrite == "replace":
        return None
    if overwrite == "skip":
        return "kept"
    raise InvalidInput(f"{url} exists and the deliver policy is overwrite: fail")


def _to_bucket(storage: Storage, key: str, target: Target, overwrite: str, content_type: str) -> str:
    from mediamill.storage.s3 import S3Storage, s3_client

    client = storage.client if isinstance(storage, S3Storage) else s3_client()
    if overwrite != "replace":
        verdict = _exists_conflict(_s3_exists(client, target), overwrite, target.url)
        if verdict:
            return verdict
    if isinstance(storage, S3Storage):  # server-side: the bytes never leave the object store
        src_bucket, src_key = storage.object_ref(key)
        client.copy({"Bucket": src_bucket, "Key": src_key}, target.bucket, target.key,
                    ExtraArgs={"ContentType": content_type, "MetadataDirective": "REPLACE"})
        return "copied"
    local = storage.local_path(key)
    if local is not None:
        client.upload_file(str(local), target.bucket, target.key, ExtraArgs={"ContentType": content_type})
    else:
        with storage.open(key) as fh:
            client.upload_fileobj(fh, target.bucket, target.key, ExtraArgs={"ContentType": content_type})
    return "copied"


def _s3_exists(client: Any, target: Target) -> bool:
    try:
        client.head_object(Bucket=target.bucket, Key=target.key)
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _to_folder(storage: Storage, key: str, target: Target, overwrite: str) -> str:
    """Write atomically (a temporary name in the same folder, then a rename): readers never see half a file."""
    assert target.path is not None
    verdict = _exists_conflict(target.path.exists(), overwrite, target.url)
    if verdict:
        return verdict
    target.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.path.parent, prefix=".mediamill-")
    os.close(fd)
    try:
        local = storage.local_path(key)
        if local is not None:
            shutil.copyfile(local, tmp)  # copy_file_range / sendfile: the kernel moves the bytes
        else:
            storage.get_to_file(key, Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return "copied"
