"""What fusers share: a fused run's file writes, in threads beside the run's next steps.

A fuser (``register_fuser``) runs consecutive steps in one call. Where a step ends by writing a file that
takes long to encode (a WebP image, a page thumbnail) and the library lets go of the GIL while it encodes
(Pillow does), the write can run in a thread while the run computes its next step: on a machine with a core to
spare the run then takes about as long as its slowest part instead of the sum of its parts. ``Later`` holds a
fused run's writes; ``Now`` is the same call for a step run alone, so a step's code has one path either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from mediamill.actions.base import StepContext, StepResult


class Now:
    """The write of a step run alone: done at once, on the step's own thread."""

    def write(self, ctx: StepContext, fn: Callable[[], object]) -> None:
        fn()
        ctx.progress(100.0)


class Later:
    """The writes of a fused run, each in a thread of a pool named ``name`` (what a write reads must be its
    own: an image the run goes on changing is copied inside ``fn``). A step's progress reaches 100 % once its
    file is written, reported from the run's own thread (the child's pipe to the worker is not shared between
    threads); the first failed write fails the run (the runner then runs its steps one by one to find out
    which)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix=name)
        self._pending: list[tuple[StepContext, Future[object]]] = []

    def write(self, ctx: StepContext, fn: Callable[[], object]) -> None:
        self._pending.append((ctx, self._pool.submit(fn)))

    def wait(self) -> None:
        """Every file written (or the first write's error)."""
        try:
            for ctx, done in self._pending:
                done.result()
                ctx.progress(100.0)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def abandon(self) -> None:
        """The run failed: let the writes under way end (nothing writes into a step's folder afterwards)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


#: Where a step's file gets written: at once, or beside the rest of a fused run (its progress reported then)
Writes = Now | Later


_W = TypeVar("_W", bound=Later)


def run_with_writes(writes: _W, run: Callable[[_W], list[StepResult]]) -> list[StepResult]:
    """``run(writes)``, then every write it left in ``writes`` done; when either fails, no write outlives the
    call."""
    try:
        results = run(writes)
    except BaseException:
        writes.abandon()
        raise
    writes.wait()
    return results
