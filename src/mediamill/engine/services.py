"""What a job's run needs from the worker that runs it, as one frozen set: the runner, the in-process fast path,
deliveries and chunked-encode segments are built from it, never from the worker itself, so they can be built
(and tested) without one and cannot reach into its claims, slots or loops.

``RunningJob`` is what deliveries and chunked encodes see of the run they work for (the runner is one), so
neither imports the runner, which calls them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import threading

    from mediamill.config import Settings
    from mediamill.engine.breakers import Breakers
    from mediamill.engine.children import ChildPool
    from mediamill.engine.retry import RetryPolicy
    from mediamill.runtime import Runtime
    from mediamill.storage import Storage
    from mediamill.store.db import Connection, Engine
    from mediamill.workflows.models import StepDef, WorkflowDef


@dataclass(frozen=True)
class RunServices:
    runtime: Runtime  # what fetching a URL input needs (settings, storage, its own HTTP limits)
    settings: Settings
    engine: Engine
    storage: Storage
    children: ChildPool  # the step children (forkserver processes)
    breakers: Breakers
    retry_policy: RetryPolicy
    worker_id: str  # the owner every guarded write is fenced on
    scratch_dir: Path  # this worker's scratch folder; a run works in a folder of its own inside it
    #: wake claimers (here and, on PostgreSQL, everywhere) when a delayed job of the queue becomes due
    wake_later: Callable[[str | None, float], None]
    #: count a job whose terminal state was committed: (job, status, workflow code, error class)
    job_finished: Callable[[dict[str, Any], str, str, str | None], None]


class LostClaim(Exception):
    """Our claim was rescued or finished elsewhere: stop touching this job.

    Raised by a run's ``guard`` inside the transaction that found out, so that the transaction rolls back;
    the runner's top catches it. Every other outcome of a unit is a value (``engine.outcomes``)."""


class RunningJob(Protocol):
    """A job's run as a delivery or a chunked encode working for it sees it."""

    svc: RunServices
    job: dict[str, Any]
    d: WorkflowDef
    steps: list[StepDef]
    scratch: Path
    cancel: threading.Event
    releasing: bool

    def guard(self, conn: Connection) -> None:
        """Raise ``LostClaim`` unless the job's claim is still ours (and extend its lease)."""

    def progress(self, i: int, pct: float, exec_id: int) -> None:
        """Note step ``i``'s progress (written by the worker's heartbeat)."""

    def chunk_source(self) -> tuple[str, Path]:
        """Storage key and local path of the video a transcode unit reads."""

    def unit_params(self, group: list[int]) -> list[dict[str, Any]]:
        """The params of the unit's steps."""
