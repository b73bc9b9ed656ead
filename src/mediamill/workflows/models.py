"""Pydantic models of a workflow document."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CODE_PATTERN = r"^[A-Z0-9][A-Z0-9_\-]{1,49}$"
QUEUE_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,49}$"


MAX_PARALLEL = 64  # segments of one chunked encode


class StepDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    action: str = Field(min_length=1, max_length=100)
    type: str | None = Field(default=None, max_length=50,
                             description="the step's free-form kind (workflow_steps.step_type)")
    params: dict[str, Any] = Field(default_factory=dict)
    on_failure: Literal["stop", "continue", "retry"] = "stop"
    timeout_seconds: int = Field(default=300, gt=0, le=7 * 86400)
    retry_count: int | None = Field(default=None, ge=0, le=100)
    when: str | None = Field(default=None, max_length=2000)
    needs: list[str] | None = None
    # split a long input at keyframes into segments encoded by any worker, then joined (``auto`` or a count)
    parallel: int | str | None = None

    @field_validator("parallel", mode="before")
    @classmethod
    def _parallel(cls, value: Any) -> int | str | None:
        if value is None:
            return None
        if value == "auto":
            return "auto"
        if isinstance(value, int) and not isinstance(value, bool) and 2 <= value <= MAX_PARALLEL:
            return value
        raise ValueError(f"expected auto or a number of segments from 2 to {MAX_PARALLEL}")


class ShadowDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(gt=0)
    percent: float = Field(gt=0, le=100)


DELIVER_ACTION = "deliver"
DELIVER_STEP = "Deliver"
#: names a ``deliver.to`` template may use (plus ``metadata.<key>``)
DELIVER_FIELDS = frozenset({"job_code", "job_id", "workflow", "input_stem", "input_name", "input_ext", "step",
                            "output", "output_stem", "ext", "date", "tenant"})
_TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")


class DeliverDef(BaseModel):
    """Where a job's outputs go once it is finished: ``to`` is a folder path or an ``s3://bucket/prefix``
    URL with a name template, e.g. ``s3://cdn/videos/{job_code}/{output}``. Without any ``{field}`` it is a
    prefix and ``{job_code}/{output}`` is appended."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1, max_length=2000)
    outputs: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="output name globs")
    overwrite: Literal["replace", "skip", "fail"] = "replace"
    content_type: str | None = Field(default=None, max_length=200,
                                     description="the stored Content-Type (default: each output's MIME type)")
    retry_count: int = Field(default=5, ge=0, le=100)
    timeout_seconds: int = Field(default=3600, gt=0, le=7 * 86400)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"to": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_to(self) -> DeliverDef:
        if not (self.to.startswith("s3://") or self.to.startswith("/") or self.to.startswith("file:///")):
            raise ValueError(f"to: expected s3://bucket/prefix or an absolute folder path, got {self.to!r}")
        if self.to.startswith("s3://") and not self.to[5:].split("/", 1)[0]:
            raise ValueError(f"to: no bucket in {self.to!r}")
        for name in _TEMPLATE_FIELD.findall(self.to):
            if name not in DELIVER_FIELDS and not re.fullmatch(r"metadata\.[A-Za-z0-9_]+", name):
                raise ValueError(f"to: unknown field {{{name}}} (known: {', '.join(sorted(DELIVER_FIELDS))}, "
                                 "metadata.<key>)")
        if "{" not in self.to:
            self.to = self.to.rstrip("/") + "/{job_code}/{output}"
        return self

    @property
    def static_prefix(self) -> str:
        """The part of ``to`` before its first field: what an allow-list is checked against."""
        return self.to.split("{", 1)[0]


class WorkflowDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    type: str = Field(min_length=1, max_length=50)
    input_types: list[str] = Field(default_factory=lambda: ["*/*"], min_length=1)
    output_types: list[str] = Field(default_factory=list)
    queue: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    priority: int = Field(default=5, ge=0, le=100)
    timeout_minutes: int = Field(default=60, gt=0, le=7 * 24 * 60)
    retry_count: int = Field(default=3, ge=0, le=100)
    steps: list[StepDef] = Field(min_length=1, max_length=200)
    shadow: ShadowDef | None = None
    deliver: DeliverDef | None = None

    @model_validator(mode="after")
    def _delivery_step(self) -> WorkflowDef:
        """``deliver:`` runs as the last step of its own (recorded, retried, visible like any other)."""
        if self.deliver is not None and not any(s.action == DELIVER_ACTION for s in self.steps):
            self.steps.append(StepDef(name=DELIVER_STEP, action=DELIVER_ACTION, on_failure="retry",
                                      retry_count=self.deliver.retry_count,
                                      timeout_seconds=self.deliver.timeout_seconds))
        return self

    @property
    def queue_name(self) -> str:
        return self.queue or self.type.replace("_", "-")

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True,
                          separators=(",", ":"))

    def checksum(self) -> str:
        """Checksum of the content (not of the YAML text), so comments and layout are not new versions."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def step_retries(self, step: StepDef) -> int:
        return step.retry_count if step.retry_count is not None else self.retry_count
