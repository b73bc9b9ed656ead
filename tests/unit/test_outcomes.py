"""The on-failure rule as a table: step policy × failure × attempts → outcome. No database, no worker."""

from __future__ import annotations

import random

import pytest

from mediamill.engine.outcomes import (
    Complete,
    Continue,
    FailJob,
    Failure,
    FailurePolicy,
    Retry,
    after_failure,
    retry_event,
)
from mediamill.engine.retry import RetryPolicy
from mediamill.errors import (
    CorruptMedia,
    InternalError,
    InvalidInput,
    ResourceExceeded,
    StepTimeout,
    ToolFailed,
    TransientError,
    Unavailable,
)
from mediamill.statuses import JobStatus
from mediamill.workflows.models import StepDef

BACKOFF = RetryPolicy(base_seconds=2.0, max_seconds=600.0)
TRANSIENT = Failure("transient", "bucket timed out", True)
BAD_INPUT = Failure("invalid_input", "not a PNG", False)


def step(on_failure: str) -> StepDef:
    return StepDef(name="thumb", action="noop", on_failure=on_failure)  # type: ignore[arg-type]


@pytest.mark.parametrize(("on_failure", "failure", "attempts", "retries", "expected"), [
    # on_failure: continue goes on whatever the failure and the count
    ("continue", TRANSIENT, 0, 3, Continue),
    ("continue", BAD_INPUT, 0, 3, Continue),
    ("continue", TRANSIENT, 9, 0, Continue),
    # on_failure: stop ends the job even when the failure could be retried
    ("stop", TRANSIENT, 0, 3, FailJob),
    ("stop", BAD_INPUT, 0, 3, FailJob),
    # on_failure: retry retries a retryable failure while attempts < retries
    ("retry", TRANSIENT, 0, 3, Retry),
    ("retry", TRANSIENT, 2, 3, Retry),
    ("retry", TRANSIENT, 3, 3, FailJob),
    ("retry", TRANSIENT, 0, 0, FailJob),
    # … and never a failure that is not retryable
    ("retry", BAD_INPUT, 0, 3, FailJob),
])
def test_after_failure_table(on_failure: str, failure: Failure, attempts: int, retries: int,
                             expected: type) -> None:
    outcome = after_failure(step(on_failure), failure, attempts, FailurePolicy(retries, BACKOFF))
    assert type(outcome) is expected


@pytest.mark.parametrize(("exc", "retried"), [
    (TransientError("x"), True), (StepTimeout("x"), True), (ResourceExceeded("x"), True),
    (InternalError("x"), True), (InvalidInput("x"), False), (CorruptMedia("x"), False), (Unavailable("x"), False),
    (ToolFailed("x", error_class="transient"), True), (ToolFailed("x", error_class="invalid_input"), False),
])
def test_the_errors_own_retryable_decides(exc: Exception, retried: bool) -> None:
    outcome = after_failure(step("retry"), Failure.of(exc), 0, FailurePolicy(1, BACKOFF))  # type: ignore[arg-type]
    assert isinstance(outcome, Retry) is retried


@pytest.mark.parametrize("attempts", [0, 1, 4, 20])
def test_retry_delay_is_full_jitter_under_the_ceiling(attempts: int) -> None:
    policy = FailurePolicy(50, BACKOFF, rng=random.Random(attempts))
    outcome = after_failure(step("retry"), TRANSIENT, attempts, policy)
    assert isinstance(outcome, Retry)
    assert outcome.ceiling == min(600.0, 2.0 * 2 ** attempts)
    assert 0 <= outcome.delay <= outcome.ceiling
    assert outcome.delay == random.Random(attempts).uniform(0, outcome.ceiling)  # the same draw: pure given its rng
    assert outcome.attempt == attempts + 1


def test_fail_job_blames_the_step_and_keeps_diagnostics() -> None:
    failure = Failure("internal", "boom", True, stderr_tail="Traceback …")
    outcome = after_failure(step("stop"), failure, 0, FailurePolicy(0, BACKOFF))
    assert outcome == FailJob(step="thumb", failure=failure)
    assert outcome.message == "thumb: boom"
    assert outcome.failure.stderr_tail == "Traceback …"


def test_retry_event_quotes_a_short_error() -> None:
    long = Failure("transient", "x" * 5000, True)
    outcome = after_failure(step("retry"), long, 1, FailurePolicy(3, BACKOFF, rng=random.Random(0)))
    assert isinstance(outcome, Retry)
    event = retry_event(outcome)
    assert event["step"] == "thumb" and event["attempt"] == 2 and event["error_class"] == "transient"
    assert event["error"] == "x" * 300 and event["ceiling_seconds"] == 4.0


@pytest.mark.parametrize(("partial", "status"), [(False, JobStatus.COMPLETED), (True, JobStatus.PARTIAL)])
def test_complete_names_the_job_status(partial: bool, status: JobStatus) -> None:
    assert Complete(partial).status == status == str(status)


def test_outcomes_are_frozen_values() -> None:
    outcome = after_failure(step("stop"), BAD_INPUT, 0, FailurePolicy(0, BACKOFF))
    with pytest.raises(AttributeError):
        outcome.step = "other"  # type: ignore[misc]
    assert outcome == after_failure(step("stop"), BAD_INPUT, 0, FailurePolicy(0, BACKOFF))
