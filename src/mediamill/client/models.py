"""Typed views of the API's JSON.

Every model keeps the exact JSON it was built from (``to_dict()``), so nothing the server sends
is lost or re-formatted, and allows fields it does not name (a newer server may send more).
Models whose response has a named schema in the OpenAPI document say so in ``__schema__``;
``tests/client/test_openapi_drift.py`` fails when such a model and the document disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

M = TypeVar("M", bound="Model")
TERMINAL = frozenset({"completed", "partial", "failed", "cancelled"})


class Model(BaseModel):
    """A response object; ``to_dict()`` is the server's JSON, untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())
    __schema__: ClassVar[str | None] = None  # the OpenAPI component this model mirrors, if any
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_api(cls: type[M], data: dict[str, Any]) -> M:
        obj = cls.model_validate(data)
        obj._raw = data
        return obj

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self._raw) if self._raw else self.model_dump(mode="json", by_alias=True)


# ------------------------------------------------------------------------------ jobs
class JobLinks(Model):
    __schema__ = "JobLinks"
    self_: str = Field(alias="self")
    events: str
    outputs: str
    cancel: str


class JobAccepted(Model):
    """What ``submit`` returns: the new (or, with an idempotency key, the earlier) job."""

    __schema__ = "JobAccepted"
    id: int
    job_code: str
    status: str
    workflow: str
    workflow_version: int
    queue: str
    priority: int
    replayed: bool = False
    routing: dict[str, Any] | None = None  # how a job without a workflow was routed
    links: JobLinks


class Step(Model):
    """One execution of a workflow step."""

    id: int | None = None
    step_name: str | None = None
    action: str | None = None
    status: str
    retry_attempt: int | None = None
    progress_percent: float | None = None
    duration_ms: int | None = None
    error_class: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


class Output(Model):
    """A file a job produced."""

    name: str
    mime_type: str | None = None
    bytes: int | None = None
    checksum: str | None = None
    step_name: str | None = None
    url: str | None = None
    metadata: dict[str, Any] | None = None


class JobEventRow(Model):
    """An event as stored on the job (``job(id).events``)."""

    id: int
    event_type: str
    step_name: str | None = None
    data: Any = None
    created_at: datetime | None = None


class JobSummary(Model):
    """A job in a list."""

    id: int
    job_code: str
    status: str
    workflow_code: str | None = None
    workflow_version: int | None = None
    priority: int | None = None
    progress_percent: float | None = None
    queue_name: str | None = None
    submitted_by: str | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    finished_at: datetime | None = None
    error_class: str | None = None
    error_message: str | None = None
    input_filename: str | None = None

    @property
    def done(self) -> bool:
        """Whether the job has ended (completed, partial, failed or cancelled)."""
        return self.status in TERMINAL


class Job(JobSummary):
    """A job with its steps, outputs and events."""

    params: dict[str, Any] | None = None
    job_metadata: dict[str, Any] | None = None
    input_mime: str | None = None
    input_size: int | None = None
    steps: list[Step] = Field(default_factory=list)
    outputs: list[Output] = Field(default_factory=list)
    events: list[JobEventRow] = Field(default_factory=list)
    dead_letter: dict[str, Any] | None = None


class JobPriority(Model):
    """The outcome of ``set_priority``: the job, its priority and its status."""

    __schema__ = "JobPriority"
    id: int
    priority: int | None
    status: str | None


class StatusResult(Model):
    """The outcome of cancel / retry: the job id and its status."""

    __schema__ = "StatusOut"
    id: int
    status: str


# ------------------------------------------------------------------------------ events
class Event(Model):
    """One Server-Sent Event of a job (``events()``); ``id`` is what ``Last-Event-ID`` resumes from."""

    id: int
    type: str
    job_id: int | None = None
    step: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime | None = None


class StatusEvent(Event):
    """The job changed status (``data.status``); a terminal one ends the stream."""

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))

    @property
    def final(self) -> bool:
        return self.status in TERMINAL


class StepEvent(Event):
    """A step started, finished, failed or was skipped (``data.status``)."""

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))


class ProgressEvent(Event):
    """Progress of the job (``percent``) and of the current step (``step_percent``)."""

    @property
    def percent(self) -> float:
        return float(self.data.get("percent") or 0.0)

    @property
    def step_percent(self) -> float:
        return float(self.data.get("step_percent") or 0.0)


EVENT_TYPES: dict[str, type[Event]] = {"status": StatusEvent, "step": StepEvent, "progress": ProgressEvent}


def event_from_sse(event_id: str, data: dict[str, Any]) -> Event:
    """The typed event of one SSE message (``id`` from the frame, the rest from its JSON data)."""
    cls = EVENT_TYPES.get(str(data.get("type")), Event)
    return cls.from_api({**data, "id": int(event_id)})


# ------------------------------------------------------------------------------ uploads
class Upload(Model):
    """An upload's state."""

    __schema__ = "UploadOut"
    id: str
    length: int | None
    offset: int
    complete: bool
    filename: str | None = None
    mime: str | None = None
    expires_at: str | None = None
    job_id: int | None = None


# ------------------------------------------------------------------------------ workflows
class Workflow(Model):
    """A workflow with its current version."""

    __schema__ = "WorkflowSummary"
    code: str
    name: str | None
    type: str | None
    queue: str | None
    priority: int | None
    active: bool
    current_version: int | None
    versions: int
    updated_at: datetime | None


class WorkflowDefinition(Model):
    """One version of a workflow with its definition."""

    __schema__ = "WorkflowOut"
    code: str
    version: int
    current_version: int | None
    active: bool
    definition: dict[str, Any]


class WorkflowVersion(Model):
    """One saved version of a workflow (``active``: the version new jobs run)."""

    __schema__ = "WorkflowVersion"
    version: int
    checksum: str
    created_by: str | None
    created_at: datetime | None
    comment: str | None
    active: bool


class WorkflowSaved(Model):
    """The version ``apply`` saved (``created`` is False when the content was already a version)."""

    __schema__ = "WorkflowSaved"
    code: str
    version: int
    created: bool
    active: bool
    warnings: list[str] = Field(default_factory=list)


class WorkflowValidation(Model):
    """A dry run: whether the document is valid, and every located problem when not."""

    __schema__ = "WorkflowValidation"
    valid: bool
    problems: list[str]
    code: str | None = None
    steps: int | None = None
    checksum: str | None = None


class WorkflowDiff(Model):
    """How two versions of a workflow differ (``from_`` is the JSON's ``from``)."""

    __schema__ = "WorkflowDiff"
    code: str
    from_: int = Field(alias="from")
    to: int
    diff: str
    steps_added: list[str]
    steps_removed: list[str]
    steps_changed: list[str]


class WorkflowActivation(Model):
    """The outcome of ``activate`` / ``deactivate``."""

    __schema__ = "WorkflowActivation"
    code: str
    version: int | None = None
    active: bool


# ------------------------------------------------------------------------------ operations
class DeadLetter(Model):
    id: int
    job_id: int
    job_code: str | None = None
    workflow_code: str | None = None
    workflow_version: int | None = None
    failed_step: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    created_at: datetime | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None


class Summary(Model):
    """The headline figures of a time window: jobs submitted and finished by outcome, error rate, p95."""

    __schema__ = "AnalyticsSummary"
    window_seconds: int
    submitted: int
    finished: int
    completed: int
    partial: int
    failed: int
    cancelled: int
    error_rate: float
    p95_seconds: float | None


class JobId(Model):
    """The job a dead letter was re-queued as."""

    __schema__ = "JobId"
    job_id: int


class Count(Model):
    """How many things an operation touched."""

    __schema__ = "Count"
    count: int


class Ok(Model):
    """An operation that has nothing to report but success."""

    __schema__ = "Ok"
    ok: bool = True


class Queue(Model):
    """A queue's depth and state."""

    __schema__ = "QueueStats"
    name: str
    depth: int
    waiting: int
    processing: int
    scheduled: int
    oldest_wait_seconds: float
    paused: bool


class Worker(Model):
    """A worker process (hostname, pid and jobs_done are shown to the default tenant only)."""

    __schema__ = "WorkerOut"
    id: str
    hostname: str | None
    pid: int | None
    pools: dict[str, int] | None
    status: str | None
    started_at: str | None
    heartbeat_at: str | None
    jobs_done: int | None
    version: str | None
    alive: bool
    state: str
    running_jobs: int


class Breaker(Model):
    """A circuit breaker of an action (``state``: closed, open or half_open)."""

    __schema__ = "Breaker"
    action: str
    state: str
    failure_count: int | None = None
    success_count: int | None = None
    opened_at: str | None = None
    next_probe_at: str | None = None
    probe_job_id: int | None = None
    updated_at: str | None = None
    last_error: str | None = None


class BreakerReset(Model):
    """The outcome of ``reset_breaker``."""

    __schema__ = "BreakerReset"
    ok: bool = True
    action: str


class Me(Model):
    """Who an API key belongs to."""

    __schema__ = "Me"
    tenant: str
    role: str
    key_id: int | None
    name: str | None


class ParamInfo(Model):
    """One parameter of an action."""

    __schema__ = "ParamInfo"
    name: str
    type: str
    required: bool
    default: Any = None
    allowed: list[Any] | None = None
    bounds: str = ""
    description: str = ""


class ActionInfo(Model):
    """What a workflow step can do: an action, its parameters and the error classes it fails with."""

    __schema__ = "ActionInfo"
    name: str
    family: str
    description: str
    params_schema: dict[str, Any]
    params: list[ParamInfo]
    errors: list[str]
    isolated: bool
    idempotent: bool
    fuse: str | None
    plugin: dict[str, str] | None


class KeyCreated(Model):
    """A new API key; ``key`` is its plaintext, shown this once."""

    __schema__ = "KeyCreated"
    id: int
    tenant: str
    role: str
    name: str | None
    prefix: str
    key: str


class Problem(Model):
    """An RFC 9457 problem document (what every error response carries)."""

    __schema__ = "Problem"
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    error_class: str | None = None
    errors: list[Any] | None = None
