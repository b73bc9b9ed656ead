"""The statuses of a job and of a step execution, and the sets the code asks about.

They are ``StrEnum`` members, so each equals the string stored in the database and shown by the
API (``JobStatus.COMPLETED == "completed"``): code may compare with either.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A workflow job (``workflow_jobs.status``)."""

    PENDING = "pending"  # submitted, not yet queued (waiting for review)
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    PARTIAL = "partial"  # finished, with a step that failed under ``on_failure: continue``
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """One execution of a step (``step_executions.status``)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    SKIPPED = "skipped"  # its ``when:`` was false
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the worker stopped or a fused unit is run again step by step


# The sets are tuples so that reports list them in this order.
#: a job in one of these states never changes again (except by a reprocess, which starts a new run)
TERMINAL_JOB = (JobStatus.COMPLETED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED)
#: a finished job whose outputs are usable
SUCCEEDED_JOB = (JobStatus.COMPLETED, JobStatus.PARTIAL)
#: a step that has its outcome: the steps that depend on it may be decided
FINISHED_STEP = (StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED)
#: a step whose outcome stands on a later run (it is not executed again)
DONE_STEP = (StepStatus.COMPLETED, StepStatus.SKIPPED)
