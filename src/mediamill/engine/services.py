"""What a job's run needs from the worker that runs it, as one frozen set: the runner, the in-process fast path,
deliveries and chunked-encode segments are built from it, never from the worker itself, so they can be built
(and tested) without one and cannot reach into its claims, slots or loops."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediamill.config import Settings
    from mediamill.engine.breakers import Breakers
    from mediamill.engine.children import ChildPool
    from mediamill.engine.retry import RetryPolicy
    from mediamill.runtime import Runtime
    from mediamill.storage import Storage
    from mediamill.store.db import Engine


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
