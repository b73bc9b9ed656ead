"""Request and response bodies of the HTTP API (they are the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from mediamill.jsontypes import json_integer


class Loose(BaseModel):
    """A response that may carry more fields than it documents."""

    model_config = ConfigDict(extra="allow")


#: request bodies: unknown fields refused, and no coercion (``"priority": false`` is not 0)
STRICT = ConfigDict(extra="forbid", strict=True)


def _json_time(value: Any) -> Any:
    """A time is an RFC 3339 string in JSON (not a number read as a Unix time)."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time string")
    return value


# integer fields of request bodies (see ``mediamill.jsontypes``); the bounds sit inside the type so the
# JSON Schema carries them (minimum / exclusiveMinimum / maximum)
Version = Annotated[int, Field(gt=0, le=1_000_000), Strict(False), BeforeValidator(json_integer)]
Priority = Annotated[int, Field(ge=0, le=100), Strict(False), BeforeValidator(json_integer)]
ByteSize = Annotated[int, Field(ge=0, le=2**53), Strict(False), BeforeValidator(json_integer)]
ExpirySeconds = Annotated[int, Field(ge=60, le=7 * 86400), Strict(False), BeforeValidator(json_integer)]


class NotifySpec(BaseModel):
    model_config = STRICT

    webhook: str | None = Field(default=None, max_length=2000, description="POSTed when the job finishes")
    email: str | None = Field(default=None, max_length=320)


def _exactly_one_input(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [{"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
                       for name in ("upload_id", "storage_key", "url")]


class JobSubmit(BaseModel):
    """A job whose input is already somewhere: exactly one of an upload, a stored object, or a URL."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_exactly_one_input)

    upload_id: str | None = Field(default=None, min_length=1, max_length=64)
    storage_key: str | None = Field(default=None, min_length=1, max_length=512)
    url: str | None = Field(default=None, min_length=1, max_length=4000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
                            description="an http(s) URL the worker fetches (public addresses only)")
    workflow: str | None = Field(default=None, max_length=50, description='a workflow code, or "auto"')
    version: Version | None = Field(default=None,
                                description="run this version instead of the current one")
    priority: Priority | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    notify: NotifySpec | None = None
    filename: str | None = Field(default=None, max_length=255)
    deliver: str | dict[str, Any] | None = Field(
        default=None, description="override the workflow's deliver: destination — a template such as "
                                  "s3://bucket/prefix/{input_stem}/{output}, or {to, outputs, overwrite, "
                                  "content_type}; only under prefixes the tenant's settings allow")

    @model_validator(mode="after")
    def _one_input(self) -> JobSubmit:
        given = [n for n in ("upload_id", "storage_key", "url") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("name exactly one input: upload_id, storage_key or url")
        return self


class JobLinks(BaseModel):
    self: str
    events: str
    outputs: str
    cancel: str


class JobAccepted(BaseModel):
    id: int
    job_code: str
    status: str
    workflow: str
    workflow_version: int
    queue: str
    priority: int
    replayed: bool = False
    routing: dict[str, Any] | None = Field(default=None, description="how a job without a workflow was routed: "
                                           "decision, workflow, rule, reason, candidates")
    links: JobLinks


class JobPatch(BaseModel):
    model_config = STRICT

    priority: Priority


class RetryRequest(BaseModel):
    model_config = STRICT

    version: Version | None = Field(default=None, description="re-run on another workflow version")


class JobEvent(BaseModel):
    """One job event: the JSON ``data`` of a Server-Sent Event (its SSE ``event`` is ``type``)."""

    job_id: int | None
    type: str = Field(description="status | step | progress | decision | retry | rescue | priority | …")
    step: str | None
    data: dict[str, Any] | None
    at: str | None = Field(description="when it happened (RFC 3339, UTC)")


class RouteRequest(BaseModel):
    """Where a job waiting in review goes."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(pattern=r"^[A-Z0-9][A-Z0-9_\-]{1,49}$")
    version: int | None = Field(default=None, gt=0, le=1_000_000)


FinishedStatus = Literal["partial", "failed", "completed", "cancelled"]


def _partial_only() -> list[FinishedStatus]:
    return ["partial"]


class ReprocessRequest(BaseModel):
    """Which steps of a finished job run again: those that failed (default), were skipped, or all."""

    model_config = ConfigDict(extra="forbid")

    steps: Literal["failed", "skipped", "all"] = "failed"
    version: Version | None = Field(default=None, description="run on another workflow version")


class BulkReprocess(ReprocessRequest):
    """Reprocess every finished job matching the filters (shadow runs are never taken)."""

    workflow: str | None = Field(default=None, max_length=50)
    status: list[FinishedStatus] = Field(default_factory=_partial_only, min_length=1, max_length=4)
    step: str | None = Field(default=None, max_length=100, description="only jobs where this step failed/skipped")
    since: Annotated[datetime, BeforeValidator(_json_time)] | None = Field(
        default=None, description="submitted at or after (RFC 3339)")
    limit: Annotated[int, Field(ge=1, le=10_000), Strict(False), BeforeValidator(json_integer)] = 1000
    dry_run: Annotated[bool, Strict()] = Field(default=False, description="count, change nothing")


class JobPage(BaseModel):
    items: list[Loose]
    next_before_id: int | None = None


class AnalyticsSummary(BaseModel):
    """The headline figures of a window; the dashboard's overview cards show the same numbers."""

    window_seconds: int
    submitted: int = Field(description="jobs submitted in the window")
    finished: int = Field(description="jobs that reached a terminal state in the window (the four below)")
    completed: int
    partial: int
    failed: int
    cancelled: int
    error_rate: float = Field(description="failed / finished; 0.0 when nothing finished")
    p95_seconds: float | None = Field(description="p95 run time of the jobs that succeeded (completed or partial)")


class Items(BaseModel):
    items: list[Loose]


class StatusOut(BaseModel):
    id: int
    status: str


class Ok(BaseModel):
    ok: bool = True


class PresignRequest(BaseModel):
    model_config = STRICT

    filename: str | None = Field(default=None, max_length=255)
    content_type: str | None = Field(default=None, max_length=100)
    size: ByteSize | None = None
    expires_in: ExpirySeconds = 900


class PresignOut(BaseModel):
    upload_id: str
    method: str = "PUT"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    expires_at: str


class UploadOut(BaseModel):
    id: str
    length: int | None
    offset: int
    complete: bool
    filename: str | None = None
    mime: str | None = None
    expires_at: str | None = None
    job_id: int | None = None


class DeadLetterRetry(BaseModel):
    model_config = STRICT

    version: Version | None = None


class DeadLetterBulkRetry(BaseModel):
    model_config = STRICT

    error_class: str | None = Field(default=None, max_length=30)
    workflow: str | None = Field(default=None, max_length=50)
    version: Version | None = None


class Count(BaseModel):
    count: int


class JobId(BaseModel):
    job_id: int


class ActivateRequest(BaseModel):
    model_config = STRICT

    version: Version


class KeyCreate(BaseModel):
    model_config = STRICT

    role: str = Field(pattern="^(admin|operator|submitter|viewer)$")
    tenant: str | None = Field(default=None, max_length=64, pattern="^[a-z0-9_-]+$")
    name: str | None = Field(default=None, max_length=200)


class KeyCreated(BaseModel):
    id: int
    tenant: str
    role: str
    name: str | None
    prefix: str
    key: str = Field(description="the plaintext key; shown once")


# ------------------------------------------------------------------------------ typed responses
class Me(BaseModel):
    tenant: str
    role: str
    key_id: int | None
    name: str | None


class BreakerReset(BaseModel):
    ok: bool = True
    action: str


class Breaker(BaseModel):
    action: str
    state: str = Field(description="closed | open | half_open")
    failure_count: int | None = None
    success_count: int | None = None
    opened_at: str | None = None
    next_probe_at: str | None = None
    probe_job_id: int | None = None
    updated_at: str | None = None
    last_error: str | None = Field(default=None, description="shown to the default tenant only")


class BreakerList(BaseModel):
    items: list[Breaker]


class QueueStats(BaseModel):
    name: str
    depth: int
    waiting: int
    processing: int
    scheduled: int = Field(description="waiting for a later time (retry back-off)")
    oldest_wait_seconds: float
    paused: bool


class QueueList(BaseModel):
    items: list[QueueStats]


class WorkerOut(BaseModel):
    id: str
    hostname: str | None = Field(description="the default tenant only")
    pid: int | None = Field(description="the default tenant only")
    pools: dict[str, int] | None = Field(description="queue → concurrency (a tenant sees its queues only)")
    status: str | None
    started_at: str | None
    heartbeat_at: str | None
    jobs_done: int | None = Field(description="the default tenant only")
    version: str | None
    alive: bool
    state: str = Field(description="live | stopping | stopped | lost (heartbeat stopped without a goodbye)")
    running_jobs: int


class WorkerList(BaseModel):
    items: list[WorkerOut]


class JobPriority(BaseModel):
    id: int
    priority: int | None
    status: str | None


class WorkflowSummary(BaseModel):
    code: str
    name: str | None
    type: str | None
    queue: str | None
    priority: int | None
    active: bool
    current_version: int | None
    versions: int
    updated_at: str | None


class WorkflowList(BaseModel):
    items: list[WorkflowSummary]


class WorkflowValidation(BaseModel):
    valid: bool
    problems: list[str] = Field(description="located messages, every problem of the document")
    code: str | None = None
    steps: int | None = None
    checksum: str | None = None


class WorkflowSaved(BaseModel):
    code: str
    version: int
    created: bool = Field(description="false when identical content already existed as this version")
    active: bool
    warnings: list[str] = Field(default_factory=list, description="types this workflow now shares with others "
                                                                  "with no routing rule deciding (add the named rule)")


class WorkflowOut(BaseModel):
    code: str
    version: int
    current_version: int | None
    active: bool
    definition: dict[str, Any]


class WorkflowVersion(BaseModel):
    version: int
    checksum: str
    created_by: str | None
    created_at: str | None
    comment: str | None
    active: bool


class WorkflowVersionList(BaseModel):
    items: list[WorkflowVersion]


class WorkflowDiff(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    code: str
    from_: int = Field(alias="from")
    to: int
    diff: str
    steps_added: list[str]
    steps_removed: list[str]
    steps_changed: list[str]


class WorkflowActivation(BaseModel):
    code: str
    version: int | None = None
    active: bool
