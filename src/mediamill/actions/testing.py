"""Test actions, always registered: operators drill failures with them, benchmarks measure the engine."""

from __future__ import annotations

import os
import signal
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mediamill.actions.base import StepContext, StepResult, action
from mediamill.errors import STEP_ERROR_CLASSES, error_for_class


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=1.0, ge=0, le=86400)


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error_class: str = Field(default="transient", json_schema_extra={"enum": list(STEP_ERROR_CLASSES)})
    message: str = "drill failure"
    times: int = Field(default=1_000_000, ge=0, description="fail the first N attempts, then succeed")

    @field_validator("error_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        if value not in STEP_ERROR_CLASSES:
            raise ValueError(f"expected one of {'|'.join(STEP_ERROR_CLASSES)}, got {value!r}")
        return value


@action("noop", family="test", isolated=False, errors=())
def noop(ctx: StepContext) -> StepResult:
    """Do nothing (measures the engine alone)."""
    return StepResult(data={"ok": True})


@action("sleep", params=SleepParams, family="test", errors=("timeout",), reads_input=False)
def sleep(ctx: StepContext) -> StepResult:
    """Sleep for `seconds`, reporting progress."""
    total = ctx.params.seconds
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < total:
        ctx.progress(min(99.0, 100.0 * elapsed / total) if total else 100.0)
        time.sleep(min(0.05, total - elapsed))
    return StepResult(data={"slept": total})


@action("fail", params=FailParams, family="test", isolated=False, errors=STEP_ERROR_CLASSES)
def fail(ctx: StepContext) -> StepResult:
    """Fail the first `times` attempts with `error_class`, then succeed."""
    if ctx.attempt < ctx.params.times:
        raise error_for_class(ctx.params.error_class, f"{ctx.params.message} (attempt {ctx.attempt + 1})")
    return StepResult(data={"recovered_on_attempt": ctx.attempt + 1})


class CrashParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["segfault", "exit", "memory", "hang"] = "segfault"


@action("crash", params=CrashParams, family="test", errors=("internal", "resource", "timeout"), idempotent=True,
        reads_input=False)
def crash(ctx: StepContext) -> StepResult:
    """Misbehave like a broken decoder (drills isolation): segfault, exit, exhaust memory, or hang."""
    mode = ctx.params.mode
    if mode == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "exit":
        os._exit(3)
    elif mode == "memory":
        hoard = []
        while True:  # until the child's address-space limit says no
            hoard.append(bytearray(64 * 1024 * 1024))
    while True:
        time.sleep(1)
