"""Pydantic models of a workflow document."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CODE_PATTERN = r"^[A-Z0-9][A-Z0-9_\-]{1,49}$"
QUEUE_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,49}$"


class StepDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    action: str = Field(min_length=1, max_length=100)
    type: str | None = Field(default=None, max_length=50, description="step_type in the seed's table")
    params: dict[str, Any] = Field(default_factory=dict)
    on_failure: Literal["stop", "continue", "retry"] = "stop"
    timeout_seconds: int = Field(default=300, gt=0, le=7 * 86400)
    retry_count: int | None = Field(default=None, ge=0, le=100)
    when: str | None = Field(default=None, max_length=2000)
    needs: list[str] | None = None


class ShadowDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(gt=0)
    percent: float = Field(gt=0, le=100)


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
