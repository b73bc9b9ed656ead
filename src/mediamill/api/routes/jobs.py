"""Jobs: submit (multipart streamed to storage, or JSON naming an input), list, detail, cancel,
retry, priority, outputs and input downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from datetime import UTC
from pathlib import Path as FsPath
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.batching import SubmitBatcher
from mediamill.api.deps import (
    MAX_ID,
    base_url,
    blocking,
    check_json_integers,
    client_int,
    ops,
    parse_time,
    read_engine,
    runtime,
    safe_filename,
    upload_slot,
)
from mediamill.api.downloads import (
    PLAYLIST_TYPES,
    is_plain_output_name,
    output_url_path,
    send_object,
    send_playlist,
)
from mediamill.api.limits import RateLimiter
from mediamill.api.models import (
    BulkReprocess,
    Items,
    JobAccepted,
    JobPage,
    JobPatch,
    JobPriority,
    JobSubmit,
    Loose,
    NotifySpec,
    ReprocessRequest,
    RetryRequest,
    RouteRequest,
    StatusOut,
)
from mediamill.api.problems import PROBLEM_RESPONSES, MethodNotAllowed
from mediamill.api.streaming import boundary_of, run_with_pipe, stream_multipart
from mediamill.engine import reprocess, review
from mediamill.engine.submit import JobInput, SubmitRequest, sniff_object, store_input_stream
from mediamill.errors import Conflict, InvalidInput, NotFound, locate
from mediamill.netguard import UrlRefused, check_url
from mediamill.observability.logging import get_logger
from mediamill.storage.base import check_key
from mediamill.store import uploads_repo, workflow_repo

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=PROBLEM_RESPONSES)
log = get_logger("mediamill.api")
MAX_METADATA_BYTES = 64 * 1024
JOB_ID = Path(..., ge=1, le=MAX_ID)

SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobSubmit"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "workflow": {"type": "string", "maxLength": 50},
                    "priority": {"type": "integer", "minimum": 0, "maximum": 100},
                    "metadata": {"type": "string", "description": "a JSON object"},
                    "params": {"type": "string", "description": "a JSON object"},
                    "notify": {"type": "string", "description": 'JSON: {"webhook": …, "email": …}'},
                }}},
        },
    }
}


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter | None = getattr(request.app.state, "submit_limiter", None)
    if limiter is None:
        limiter = request.app.state.submit_limiter = RateLimiter(runtime(request).settings.submit_rate_per_minute)
    return limiter


def _links(request: Request, job_id: int) -> dict[str, str]:
    root = f"{base_url(request)}/v1/jobs/{job_id}"
    return {"self": root, "events": f"{root}/events", "outputs": f"{root}/outputs", "cancel": f"{root}/cancel"}


def _accepted(request: Request, job: Any) -> JSONResponse:
    body = {**job.as_dict(), "replayed": job.replayed, "links": _links(request, job.id)}
    log.info("job accepted", job_id=job.id, job_code=job.job_code, workflow=job.workflow_code,
             replayed=job.replayed, request_id=getattr(request.state, "request_id", None))
    return JSONResponse(body, status_code=202, headers={"Location": body["links"]["self"]})


def _json_object(raw: str | None, name: str) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidInput(f"{name} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object")
    return value


def _check_notify(request: Request, notify: NotifySpec | None) -> dict[str, Any] | None:
    if notify is None:
        return None
    if notify.webhook:
        _check_url(request, notify.webhook, "body.notify.webhook")
    if notify.email and ("@" not in notify.email or any(c in notify.email for c in "\r\n ,;")):
        raise InvalidInput("notify.email must be one e-mail address")
    return notify.model_dump(exclude_none=True) or None


def _check_url(request: Request, url: str, loc: str) -> None:
    try:
        check_url(url, runtime(request).settings.url_allowlist)
    except UrlRefused as exc:
        raise locate(exc, loc) from None


def _base_request(request: Request, caller: Caller, *, workflow: str | None, priority: int | None,
                  metadata: dict[str, Any], params: dict[str, Any], notify: dict[str, Any] | None,
                  job_input: JobInput, version: int | None = None) -> SubmitRequest:
    check_json_integers(metadata, "body.metadata")
    check_json_integers(params, "body.params")
    return SubmitRequest(
        job_input=job_input, workflow_code=workflow, tenant_id=caller.tenant_id, priority=priority,
        params=params, metadata=metadata, notify=notify, submitted_by=caller.label,
        request_id=getattr(request.state, "request_id", None),
        idempotency_key=request.headers.get("idempotency-key") or None, version=version)


_owners: dict[str, tuple[float, bool, str | None]] = {}
OWNER_CACHE_SECONDS = 5.0


def _workflow_owner(request: Request, code: str) -> tuple[bool, str | None]:
    """(exists, tenant) of a workflow, cached a few seconds (owners never change; codes rarely appear)."""
    now = time.monotonic()
    hit = _owners.get(code)
    if hit is not None and now - hit[0] < OWNER_CACHE_SECONDS:
        return hit[1], hit[2]
    with read_engine(request).connect() as conn:
        exists, tenant = workflow_repo.workflow_owner(conn, code)
    if len(_owners) > 10_000:
        _owners.clear()
    _owners[code] = (now, exists, tenant)
    return exists, tenant


def _check_workflow(request: Request, caller: Caller, code: str | None) -> None:
    """Another tenant's workflow does not exist for the caller (shared ones have no tenant)."""
    if not code or code == "auto":
        return
    exists, tenant = _workflow_owner(request, code)
    if not exists or tenant not in (None, caller.tenant_id):
        raise NotFound(f"no workflow {code!r}")


def _check_deliver(request: Request, caller: Caller, raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    from mediamill.engine.delivery import check_override

    with read_engine(request).connect() as conn:
        return check_override(conn, caller.tenant_id, raw)


def _idempotency_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------ inputs
# An upload that is complete and linked to a job never changes again (termination refuses it, the
# expiry sweep skips it), so its facts are kept: repeated submissions of one upload skip a read.
_settled_uploads: dict[tuple[str, str], JobInput] = {}


def _input_from_upload(request: Request, caller: Caller, upload_id: str) -> tuple[JobInput, bool]:
    """The upload as a job input, and whether it still has to be linked to its first job."""
    settled = _settled_uploads.get((caller.tenant_id, upload_id))
    if settled is not None:
        return dataclasses.replace(settled), False
    with read_engine(request).connect() as conn:
        session = uploads_repo.get_session(conn, upload_id, tenant_id=caller.tenant_id)
    if session["completed_at"] is None:
        session = _complete_presigned(request, session)
    facts = uploads_repo.server_facts(session)
    job_input = JobInput(storage_key=session["storage_key"], filename=session["filename"], mime=facts.get("mime"),
                         size=session["upload_length"], checksum=facts.get("sha256"), reused=True)
    if session["job_id"] is not None:
        if len(_settled_uploads) > 10_000:
            _settled_uploads.clear()
        _settled_uploads[(caller.tenant_id, upload_id)] = dataclasses.replace(job_input)
    return job_input, session["job_id"] is None


def _complete_presigned(request: Request, session: dict[str, Any]) -> dict[str, Any]:
    """A presigned upload completes when its object exists in storage."""
    rt = runtime(request)
    key = session["storage_key"]
    if not facts_presigned(session) or not key or not rt.storage.exists(key):
        raise Conflict(f"upload {session['id']} is not complete yet")
    size = rt.storage.size(key)
    if size > rt.settings.max_upload_bytes:
        rt.storage.delete(key)
        raise InvalidInput("the uploaded object is larger than the upload limit")
    uploads_repo.complete(rt.engine, session["id"], storage_key=key, size=size,
                          facts={"mime": sniff_object(rt.storage, key), "presigned": True})
    with rt.engine.connect() as conn:
        return uploads_repo.get_session(conn, session["id"], tenant_id=None)


def facts_presigned(session: dict[str, Any]) -> bool:
    return bool((session.get("metadata") or {}).get("_presigned"))


def _input_from_key(request: Request, caller: Caller, key: str, filename: str | None) -> JobInput:
    """A stored object of the caller's tenant (keys are ``kind/<tenant>/…``)."""
    check_key(key)
    parts = key.split("/")
    if len(parts) < 3 or parts[0] not in ("inputs", "uploads") or parts[1] != _tenant_part(caller.tenant_id):
        raise NotFound(f"no object {key!r}")
    storage = runtime(request).storage
    if not storage.exists(key):
        raise NotFound(f"no object {key!r}")
    return JobInput(storage_key=key, filename=filename, mime=sniff_object(storage, key), size=storage.size(key),
                    reused=True)


def _tenant_part(tenant_id: str) -> str:
    from mediamill.storage.base import new_key

    return new_key("x", tenant_id).split("/")[1]


def _json_input(request: Request, caller: Caller, body: JobSubmit) -> tuple[JobInput, bool]:
    name = safe_filename(body.filename)
    if body.upload_id:
        return _input_from_upload(request, caller, body.upload_id)
    if body.storage_key:
        return _input_from_key(request, caller, body.storage_key, name), False
    _check_url(request, body.url or "", "body.url")
    return JobInput(url=body.url, filename=name), False


# ------------------------------------------------------------------------------ submit
@router.post("", status_code=202, response_model=JobAccepted, openapi_extra=SUBMIT_BODY,
             summary="Submit a job (multipart file, or JSON naming an upload / storage key / URL)")
async def submit(request: Request, caller: Caller = auth.Submitter) -> Response:
    """Accept a job and return at once with its id and links (``202``).

    ``Idempotency-Key``: the same key with the same body returns the same job; with another
    body it is ``409``.
    """
    _limiter(request).take(caller.key_id or caller.label)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/"):
        return await _submit_multipart(request, caller, ctype)
    if not ctype.startswith("application/json"):
        raise InvalidInput("send multipart/form-data with a file, or application/json")
    raw = await request.body()
    try:
        body = JobSubmit.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise InvalidInput("; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                     for e in exc.errors())) from None
    req, link_upload = await blocking(_json_request, request, caller, body)
    job = await _batcher(request).submit(req)
    if link_upload and body.upload_id and not job.replayed:
        await blocking(uploads_repo.attach_job, runtime(request).engine, body.upload_id, job.id)
    return _accepted(request, job)


def _batcher(request: Request) -> SubmitBatcher:
    batcher: SubmitBatcher | None = getattr(request.app.state, "submit_batcher", None)
    if batcher is None:
        rt = runtime(request)
        sqlite = rt.engine.dialect.name == "sqlite"
        lock = FsPath(rt.settings.data_dir) / "submit.lock" if sqlite else None
        batcher = SubmitBatcher(rt.engine, lock, max_flushes=1 if sqlite else 4)
        request.app.state.submit_batcher = batcher
    return batcher


def _json_request(request: Request, caller: Caller, body: JobSubmit) -> tuple[SubmitRequest, bool]:
    """Check the body and build the submission (blocking: reads the database and storage)."""
    check_json_integers(body.metadata, "body.metadata")  # the cheap checks first: no lookups for a bad body
    check_json_integers(body.params, "body.params")
    _check_workflow(request, caller, body.workflow)
    notify = _check_notify(request, body.notify)
    job_input, link_upload = _json_input(request, caller, body)
    req = _base_request(request, caller, workflow=body.workflow, priority=body.priority, metadata=body.metadata,
                        params=body.params, notify=notify, job_input=job_input, version=body.version)
    req.deliver = _check_deliver(request, caller, body.deliver)
    if req.idempotency_key:
        described = body.model_dump(mode="json")
        if body.upload_id and job_input.checksum:
            # the same bytes uploaded again (a client retrying after a lost answer) are the same request,
            # as they are for a multipart submission
            described["upload_id"] = f"sha256:{job_input.checksum}"
        req.idempotency_hash = _idempotency_hash(described)
    return req, link_upload


async def _submit_multipart(request: Request, caller: Caller, ctype: str) -> Response:
    rt = runtime(request)
    boundary = boundary_of(ctype)

    def consume(pipe: Any) -> JobInput:
        return store_input_stream(rt.storage, pipe, tenant_id=caller.tenant_id)

    async def produce(pipe: Any) -> Any:
        return await stream_multipart(request.stream(), boundary, pipe, max_file_bytes=rt.settings.max_upload_bytes)

    with upload_slot(request, caller.key_id or caller.label):
        job_input, form = await run_with_pipe(consume, produce)
    try:
        if not form.saw_file:
            raise InvalidInput("the multipart body needs a 'file' part")
        job_input.filename = safe_filename(form.filename)
        job = await _batcher(request).submit(await blocking(_form_request, request, caller, form.fields, job_input))
    except BaseException:
        await blocking(rt.storage.delete, job_input.storage_key)  # leave nothing behind
        raise
    if job.replayed:
        await blocking(rt.storage.delete, job_input.storage_key)
    return _accepted(request, job)


def _form_request(request: Request, caller: Caller, fields: dict[str, str], job_input: JobInput) -> SubmitRequest:
    _check_workflow(request, caller, fields.get("workflow"))
    priority = client_int(fields["priority"], "body.priority", maximum=100) if "priority" in fields else None
    try:
        notify_spec = NotifySpec.model_validate(_json_object(fields.get("notify"), "notify")) \
            if fields.get("notify") else None
    except ValidationError:
        raise InvalidInput("notify must be a JSON object with webhook and/or email") from None
    req = _base_request(request, caller, workflow=fields.get("workflow") or None,
                        priority=priority,
                        metadata=_json_object(fields.get("metadata"), "metadata"),
                        params=_json_object(fields.get("params"), "params"),
                        notify=_check_notify(request, notify_spec), job_input=job_input)
    if fields.get("deliver"):
        raw = fields["deliver"].strip()
        req.deliver = _check_deliver(request, caller, _json_object(raw, "deliver") if raw.startswith("{") else raw)
    if req.idempotency_key:
        req.idempotency_hash = _idempotency_hash(sorted(fields.items()), job_input.checksum)
    return req


@router.api_route("/reprocess", methods=["GET", "PATCH", "DELETE"], include_in_schema=False)
def _reprocess_takes_post_only() -> None:
    """``reprocess`` is an action, not a job id: other methods are 405 (not a 422 for the id)."""
    raise MethodNotAllowed("POST")


@router.post("/reprocess", response_model=Loose)
def reprocess_jobs(body: BulkReprocess, request: Request, caller: Caller = auth.Operator) -> dict[str, Any]:
    """Reprocess every finished job of the tenant matching the filters; returns how many (``count``)."""
    since = body.since.astimezone(UTC).replace(tzinfo=None) if body.since and body.since.tzinfo else body.since
    sel = reprocess.Selection(tenant_id=caller.tenant_id, workflow=body.workflow, status=tuple(body.status),
                              step=body.step, since=since, limit=body.limit)
    return reprocess.reprocess_jobs(runtime(request).engine, sel, steps=body.steps, version=body.version,
                                    by=caller.label, dry_run=body.dry_run)


# ------------------------------------------------------------------------------ read
@router.get("", response_model=JobPage)
def list_jobs(request: Request, caller: Caller = auth.Viewer,
              status: str | None = Query(None, max_length=20), workflow: str | None = Query(None, max_length=50),
              queue: str | None = Query(None, max_length=50), submitter: str | None = Query(None, max_length=100),
              since: str | None = Query(None, description="RFC 3339; submitted at or after", max_length=40,
                                        json_schema_extra={"format": "date-time"}),
              until: str | None = Query(None, description="RFC 3339; submitted before", max_length=40,
                                        json_schema_extra={"format": "date-time"}),
              limit: int = Query(50, ge=1, le=500),
              before_id: int | None = Query(None, ge=1, le=MAX_ID),
              shadow: bool = Query(False, description="list shadow runs (only them) instead")) -> dict[str, Any]:
    """Jobs of the caller's tenant, newest first; page with ``before_id=<next_before_id>``."""
    items = ops().list_jobs(read_engine(request), tenant_id=caller.tenant_id, status=status, workflow=workflow,
                            queue=queue, submitter=submitter, since=parse_time(since, "query.since"),
                            until=parse_time(until, "query.until"), limit=limit, before_id=before_id, shadow=shadow)
    next_id = items[-1]["id"] if len(items) == limit else None
    return {"items": items, "next_before_id": next_id}


def _job(request: Request, caller: Caller, job_id: int) -> dict[str, Any]:
    return ops().get_job(read_engine(request), job_id, tenant_id=caller.tenant_id)  # type: ignore[no-any-return]


@router.get("/{job_id}", response_model=Loose)
def get_job(request: Request, job_id: int = JOB_ID, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """One job with its steps, outputs and events."""
    job = _job(request, caller, job_id)
    return {**job, "links": _links(request, job_id)}


@router.post("/{job_id}/cancel", response_model=StatusOut)
def cancel_job(request: Request, job_id: int = JOB_ID, caller: Caller = auth.Submitter) -> dict[str, Any]:
    """Cancel a job: at once when it waits, at the next step boundary when it runs."""
    status = ops().cancel_job(runtime(request).engine, job_id, tenant_id=caller.tenant_id, by=caller.label)
    return {"id": job_id, "status": status}


@router.post("/{job_id}/retry", status_code=202, response_model=StatusOut)
def retry_job(request: Request, job_id: int = JOB_ID, body: RetryRequest | None = None,
              caller: Caller = auth.Operator) -> dict[str, Any]:
    """Re-run a failed, partial or cancelled job from the step that did not complete."""
    ops().retry_job(runtime(request).engine, job_id, tenant_id=caller.tenant_id,
                    version=body.version if body else None, by=caller.label)
    return {"id": job_id, "status": "queued"}


@router.post("/{job_id}/route", status_code=202, response_model=Loose)
def route_job(body: RouteRequest, request: Request, job_id: int = JOB_ID,
              caller: Caller = auth.Operator) -> dict[str, Any]:
    """Move a job waiting in review into a workflow's queue (same id, same input)."""
    return review.route_job(runtime(request).engine, job_id, body.workflow, version=body.version,
                            tenant_id=caller.tenant_id, by=caller.label)


@router.post("/{job_id}/reprocess", status_code=202, response_model=Loose)
def reprocess_job(request: Request, body: ReprocessRequest | None = None, job_id: int = JOB_ID,
                  caller: Caller = auth.Operator) -> dict[str, Any]:
    """Re-run only the failed (or skipped, or all) steps of a finished job, keeping the other steps'
    outputs; a new run with new execution records."""
    body = body or ReprocessRequest()
    return reprocess.reprocess_job(runtime(request).engine, job_id, steps=body.steps, version=body.version,
                                   tenant_id=caller.tenant_id, by=caller.label)


@router.patch("/{job_id}", response_model=JobPriority)
def patch_job(body: JobPatch, request: Request, job_id: int = JOB_ID, caller: Caller = auth.Operator) -> dict[str, Any]:
    """Change the priority of a waiting job (a priority bump)."""
    ops().change_priority(runtime(request).engine, job_id, body.priority, tenant_id=caller.tenant_id)
    job = _job(request, caller, job_id)
    return {"id": job_id, "priority": job.get("priority"), "status": job.get("status")}


@router.get("/{job_id}/outputs", response_model=Items)
def list_outputs(request: Request, job_id: int = JOB_ID, caller: Caller = auth.Viewer) -> dict[str, Any]:
    """Every file the job's steps produced, with download links."""
    job = _job(request, caller, job_id)
    root = f"{base_url(request)}/v1/jobs/{job_id}/outputs"
    return {"items": [{**_public_output(o), "url": f"{root}/{output_url_path(o['name'])}"}
                      for o in job.get("outputs", [])]}


def _public_output(o: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in o.items() if k not in ("storage_key", "tenant_id")}


@router.get("/{job_id}/outputs/{name:path}", response_class=Response,
            responses={200: {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the file (its own media type)"},
                       307: {"description": "redirect to a short-lived presigned URL"}})
def download_output(request: Request, name: str, job_id: int = JOB_ID, caller: Caller = auth.Viewer) -> Response:
    """Download one output (Range requests on local storage; a presigned redirect on S3).

    Names may contain ``/`` (an HLS ladder's ``hls/360p/index.m3u8`` and its segments), so the
    master playlist's URL plays straight from here: its relative URIs resolve to their siblings.
    The name is only ever compared with the job's recorded output names, never joined to a path;
    ``.``/``..`` segments are refused outright.
    """
    if not is_plain_output_name(name):
        raise NotFound(f"job {job_id} has no output {name!r}")
    job = _job(request, caller, job_id)
    out = next((o for o in job.get("outputs", []) if o["name"] == name), None)
    if out is None:
        raise NotFound(f"job {job_id} has no output {name!r}")
    if out.get("mime_type") in PLAYLIST_TYPES:
        return send_playlist(runtime(request).storage, out["storage_key"], media_type=out["mime_type"])
    return send_object(request, runtime(request).storage, out["storage_key"], filename=out["name"],
                       media_type=out.get("mime_type"))


@router.get("/{job_id}/input", response_class=Response,
            responses={200: {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the file (its own media type)"},
                       307: {"description": "redirect to a short-lived presigned URL"}})
def download_input(request: Request, job_id: int = JOB_ID, caller: Caller = auth.Viewer) -> Response:
    """Download the job's original input."""
    job = _job(request, caller, job_id)
    key = job.get("input_key")
    if not key:
        raise NotFound(f"job {job_id} has no stored input")
    return send_object(request, runtime(request).storage, key, filename=job.get("input_filename") or "input",
                       media_type=job.get("input_mime"))


