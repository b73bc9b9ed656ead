"""Request and response bodies of the HTTP API (they are the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Loose(BaseModel):
    """A response that may carry more fields than it documents."""

    model_config = ConfigDict(extra="allow")


class NotifySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook: str | None = Field(default=None, max_length=2000, description="POSTed when the job finishes")
    email: str | None = Field(default=None, max_length=320)


class JobSubmit(BaseModel):
    """A job whose input is already somewhere: an upload, a stored object, or a URL."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str | None = Field(default=None, max_length=64)
    storage_key: str | None = Field(default=None, max_length=512)
    url: str | None = Field(default=None, max_length=4000)
    workflow: str | None = Field(default=None, max_length=50, description='a workflow code, or "auto"')
    version: int | None = Field(default=None, gt=0, le=1_000_000,
                                description="run this version instead of the current one")
    priority: int | None = Field(default=None, ge=0, le=100)
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
    model_config = ConfigDict(extra="forbid")

    priority: int = Field(ge=0, le=100)


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, gt=0, le=1_000_000, description="re-run on another workflow version")


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
    version: int | None = Field(default=None, gt=0, le=1_000_000, description="run on another workflow version")


class BulkReprocess(ReprocessRequest):
    """Reprocess every finished job matching the filters (shadow runs are never taken)."""

    workflow: str | None = Field(default=None, max_length=50)
    status: list[FinishedStatus] = Field(default_factory=_partial_only, min_length=1, max_length=4)
    step: str | None = Field(default=None, max_length=100, description="only jobs where this step failed/skipped")
    since: datetime | None = Field(default=None, description="submitted at or after (ISO-8601)")
    limit: int = Field(default=1000, ge=1, le=10_000)
    dry_run: bool = Field(default=False, description="count, change nothing")


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
    model_config = ConfigDict(extra="forbid")

    filename: str | None = Field(default=None, max_length=255)
    content_type: str | None = Field(default=None, max_length=100)
    size: int | None = Field(default=None, ge=0, le=2**53)
    expires_in: int = Field(default=900, ge=60, le=7 * 86400)


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
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, gt=0, le=1_000_000)


class DeadLetterBulkRetry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_class: str | None = Field(default=None, max_length=30)
    workflow: str | None = Field(default=None, max_length=50)
    version: int | None = Field(default=None, gt=0, le=1_000_000)


class Count(BaseModel):
    count: int


class JobId(BaseModel):
    job_id: int


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(gt=0, le=1_000_000)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
