"""Group commit for job submissions.

Under load, many ``POST /v1/jobs`` arrive at once. Instead of one transaction each, the
``SubmitBatcher`` hands every submission that arrives while a transaction is running to the
next one (``submit_many``): one commit for many jobs, no added delay when idle (a lone request
is flushed at once). Each caller still waits for its own job to be committed before it answers
``202``. When a batch fails (one bad request makes ``submit_many`` roll back), its requests are
retried one by one so each gets its own answer.

Requests with an ``Idempotency-Key`` bypass the batcher: their replay check belongs in their
own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediamill.engine.submit import SubmitRequest, SubmittedJob, submit_job, submit_many
from mediamill.store.db import Engine

MAX_BATCH = 256


@dataclass
class SubmitBatcher:
    engine: Engine
    lock_path: Path | None = None  # SQLite: the file API processes take turns on
    max_flushes: int = 1  # transactions in flight at once (SQLite: one writer; PostgreSQL: several)
    _pending: list[tuple[SubmitRequest, asyncio.Future[SubmittedJob]]] = field(default_factory=list)
    _flushing: int = 0

    async def submit(self, req: SubmitRequest) -> SubmittedJob:
        """Submit ``req`` in the next group commit; returns its job (or raises its error)."""
        if req.idempotency_key:
            return await asyncio.to_thread(submit_job, self.engine, req)
        future: asyncio.Future[SubmittedJob] = asyncio.get_running_loop().create_future()
        self._pending.append((req, future))
        if self._flushing < self.max_flushes:
            self._flushing += 1
            asyncio.get_running_loop().create_task(self._flush_loop())
        return await future

    async def _flush_loop(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                results = await asyncio.to_thread(_commit, self.engine, [r for r, _f in batch], self.lock_path)
                for (_req, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flushing -= 1


@contextlib.contextmanager
def _writer_turn(lock_path: Path | None) -> Iterator[None]:
    """On SQLite, API processes take turns through a file lock before writing.

    SQLite's own busy handler waits by sleeping with back-off (up to 100 ms a try), which
    turns write contention between processes into long tail latencies; a blocking ``flock``
    hands the turn over as soon as the holder commits.
    """
    if lock_path is None:
        yield
        return
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _commit(engine: Engine, reqs: list[SubmitRequest], lock_path: Path | None = None) -> list[Any]:
    """All in one transaction; on failure, one by one (each request gets its own outcome)."""
    with _writer_turn(lock_path):
        return _commit_unlocked(engine, reqs)


def _commit_unlocked(engine: Engine, reqs: list[SubmitRequest]) -> list[Any]:
    if len(reqs) > 1:
        try:
            return list(submit_many(engine, reqs))
        except Exception:  # fall through to the per-request path for precise errors
            pass
    results: list[Any] = []
    for req in reqs:
        try:
            results.append(submit_job(engine, req))
        except Exception as exc:
            results.append(exc)
    return results
