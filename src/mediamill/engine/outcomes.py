"""What happens to a job after one of its steps failed, decided by one pure function.

Both ways a job runs — the normal path (``runner.JobRunner``) and the in-process fast path
(``inline.run_fast``) — call :func:`after_failure` and apply the value it returns; neither writes
the on-failure rule itself. The values:

- :class:`Continue` — the step said ``on_failure: continue``: the job goes on and ends ``partial``;
- :class:`Retry` — the job goes back to the queue and runs again after ``delay`` seconds;
- :class:`FailJob` — the job ends ``failed``, blaming the step;
- :class:`Complete` — every step ran: the job ends ``completed`` (or ``partial``);
- :class:`Hold` — a breaker is open: the job waits in the queue without counting a retry.

The function reads nothing but its arguments (the back-off's jitter comes from ``policy.rng`` when
given), so its table of cases is tested without a database or a worker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from mediamill.engine.retry import RetryPolicy
from mediamill.errors import SHORT_MESSAGE, MediamillError
from mediamill.statuses import JobStatus


class FailingStep(Protocol):
    """The two fields of a step definition the rule reads (``workflows.models.StepDef`` has them)."""

    @property
    def name(self) -> str: ...

    @property
    def on_failure(self) -> str: ...


@dataclass(frozen=True)
class Failure:
    """One failed step execution, as recorded: its class, public message and operator diagnostics."""

    error_class: str
    message: str
    retryable: bool
    stderr_tail: str = ""

    @classmethod
    def of(cls, exc: MediamillError) -> Failure:
        """The failure an error describes; whether it may be retried is the error's own ``retryable``."""
        return cls(exc.error_class, exc.message, exc.retryable, exc.stderr_tail or "")


@dataclass(frozen=True)
class FailurePolicy:
    """What the workflow allows a failing step: ``retries`` runs again, spaced by ``backoff``."""

    retries: int
    backoff: RetryPolicy
    rng: random.Random | None = None


@dataclass(frozen=True)
class Continue:
    """The failure is recorded and the job goes on; it ends ``partial``."""


@dataclass(frozen=True)
class Retry:
    """Requeue the job: it runs again after ``delay`` seconds (drawn from [0, ``ceiling``])."""

    delay: float
    ceiling: float
    attempt: int  # the retry this is (1 = the first)
    step: str
    failure: Failure


@dataclass(frozen=True)
class FailJob:
    """End the job ``failed``; its error names the step."""

    step: str
    failure: Failure

    @property
    def message(self) -> str:
        return f"{self.step}: {self.failure.message}"


@dataclass(frozen=True)
class Complete:
    """Every step ran; ``partial`` when a step failed with ``on_failure: continue``."""

    partial: bool = False

    @property
    def status(self) -> JobStatus:
        return JobStatus.PARTIAL if self.partial else JobStatus.COMPLETED


@dataclass(frozen=True)
class Hold:
    """A circuit breaker is open for ``action``: the job waits ``delay`` seconds in the queue (no retry counted)."""

    delay: float
    action: str
    step: str


#: what a unit of steps (or the whole job) came to
@dataclass(frozen=True)
class Parked:
    """The job waits for work done outside it (the segments of a chunked encode); its requeue is already
    written, so the runner only stops."""


Outcome = Continue | Retry | FailJob | Complete | Hold | Parked


def after_failure(step: FailingStep, failure: Failure, attempts: int,
                  policy: FailurePolicy) -> Continue | Retry | FailJob:
    """The one on-failure rule. ``attempts`` is how many times this step already failed in this run
    (before this failure); a step is retried while that is below ``policy.retries``, only when it
    says ``on_failure: retry`` and the failure is retryable (bad input never is)."""
    if step.on_failure == "continue":
        return Continue()
    if step.on_failure == "retry" and failure.retryable and attempts < policy.retries:
        return Retry(delay=policy.backoff.next_delay(attempts, policy.rng), ceiling=policy.backoff.ceiling(attempts),
                     attempt=attempts + 1, step=step.name, failure=failure)
    return FailJob(step=step.name, failure=failure)


def retry_event(r: Retry) -> dict[str, object]:
    """The data of the ``retry`` event a requeue writes (both paths write the same)."""
    return {"step": r.step, "attempt": r.attempt, "error_class": r.failure.error_class,
            "error": r.failure.message[:SHORT_MESSAGE], "ceiling_seconds": round(r.ceiling, 3)}
