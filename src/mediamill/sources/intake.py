"""Running one source: discover file versions, take them as jobs (exactly once), apply ``after``.

A :class:`SourceRunner` is driven by the process elected for its source (see
:mod:`mediamill.sources.manager`), but nothing here depends on the election for
correctness: a file version is one ``source_files`` row, claimed by one process, and the
claim turns into a job in the job's own transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from mediamill import telemetry
from mediamill.engine.submit import SubmitRequest, SubmittedJob, announce, submit_in
from mediamill.errors import SOURCE_MESSAGE, Conflict, InvalidInput, MediamillError, NotFound
from mediamill.runtime import Runtime
from mediamill.sources.backends import BucketBackend, FolderBackend, Unreadable, Vanished, backend_for
from mediamill.sources.models import SourceSpec, file_fields, render_metadata
from mediamill.statuses import SUCCEEDED_JOB
from mediamill.store import outbox, sources_repo, workflow_repo
from mediamill.store.timeutil import utcnow

log = logging.getLogger("mediamill.sources")
TAKE_BATCH = 50
LIST_PAGE = 1000  # keys per bucket listing request (the S3 maximum)
SKIPPED_EVENT = "source.file_skipped"


class _ClaimLost(Exception):
    """Another process took over the file's claim while we were copying it."""


@dataclass
class Timing:
    """How often a runner looks (from the source, else the settings)."""

    poll: float
    settle: float
    max_queue: int
    tick: float
    rescan: float

    @classmethod
    def of(cls, spec: SourceSpec, settings: Any) -> Timing:
        return cls(poll=spec.poll_seconds or settings.source_poll_seconds,
                   settle=settings.source_settle_seconds if spec.settle_seconds is None else spec.settle_seconds,
                   max_queue=spec.max_queue or settings.source_max_queue, tick=settings.source_tick_seconds,
                   rescan=settings.source_rescan_seconds)


class SourceRunner:
    """One source's loop: scan or list when due (or when woken), take pending files, finish taken ones."""

    def __init__(self, rt: Runtime, row: dict[str, Any], owner: str) -> None:
        self.rt = rt
        self.row = row
        self.owner = owner
        self.spec = SourceSpec.from_row(row)
        self.timing = Timing.of(self.spec, rt.settings)
        self.backend = backend_for(self.spec, settle=self.timing.settle)
        self.wake = threading.Event()
        self._known: set[tuple[str, str]] | None = None
        self._next_scan = 0.0
        self._next_full = 0.0
        self._waiting: str | None = row.get("waiting_reason")

    @property
    def name(self) -> str:
        return self.spec.name

    # ------------------------------------------------------------------ one round
    def run_once(self) -> float:
        """Do what is due; returns how long to wait before the next round (a wake-up cuts it short)."""
        now = time.monotonic()
        next_in = self.timing.tick
        if now >= self._next_scan or self.wake.is_set():
            self.wake.clear()
            recheck = self.discover()
            self._next_scan = now + min(self.timing.poll, recheck if recheck is not None else self.timing.poll)
        self._release_stale()
        took = self.take()
        self.finish()
        if took >= TAKE_BATCH:
            return 0.0
        return max(0.0, min(next_in, self._next_scan - time.monotonic()))

    # ------------------------------------------------------------------ discover
    def discover(self) -> float | None:
        """Record new file versions as pending; returns when an unsettled file is due for another look."""
        try:
            if isinstance(self.backend, FolderBackend):
                return self._scan_folder(self.backend)
            self._list_bucket(self.backend)
            return None
        except FileNotFoundError:
            self._error(f"the folder {self.spec.path} does not exist")
        except PermissionError as exc:
            self._error(f"cannot list {self.spec.location}: {exc.strerror or exc}")
        except Exception as exc:  # a listing error is the source's state, shown on its page; the loop goes on
            self._error(f"cannot list {self.spec.location}: {exc}")
        return None

    def _scan_folder(self, backend: FolderBackend) -> float | None:
        settled, recheck = backend.scan()
        known = self._known_versions()
        fresh = [v for v in settled if (v.path, v.fingerprint) not in known]
        with self.rt.engine.begin() as conn:
            sources_repo.record_files(conn, self.row, [v.as_row() for v in fresh], "scan")
            sources_repo.set_state(conn, self.row["id"], last_scan_at=utcnow(), last_error=None)
        known.update((v.path, v.fingerprint) for v in fresh)
        return recheck

    def _known_versions(self) -> set[tuple[str, str]]:
        if self._known is None:
            with self.rt.engine.connect() as conn:
                self._known = sources_repo.known_versions(conn, self.row["id"])
        return self._known

    def _list_bucket(self, backend: BucketBackend) -> None:
        """List from the high-water mark (or from the start when a full re-list is due), page by page; the
        mark moves with each page, in the transaction that records the page's objects."""
        now = time.monotonic()
        full = now >= self._next_full
        if full:
            self._next_full = now + self.timing.rescan
        start_after = None if full else self._high_water()
        token: str | None = None
        while True:
            versions, token, last = backend.list_page(start_after=start_after, token=token, page_size=LIST_PAGE)
            with self.rt.engine.begin() as conn:
                sources_repo.record_files(conn, self.row, [v.as_row() for v in versions], "listing")
                mark = max(filter(None, (last, self._high_water())), default=None)
                sources_repo.set_state(conn, self.row["id"], high_water=mark, last_scan_at=utcnow(), last_error=None)
            self.row["high_water"] = mark
            if token is None:
                return

    def _high_water(self) -> str | None:
        return self.row.get("high_water")

    # ------------------------------------------------------------------ take
    def take(self) -> int:
        """Turn pending files into jobs while the queue has room; returns how many were claimed."""
        room = self._room()
        if room <= 0:
            return 0
        with self.rt.engine.connect() as conn:  # read first: an idle source takes no write lock
            ids = sources_repo.pending_ids(conn, self.row["id"], min(room, TAKE_BATCH))
        if not ids:
            return 0
        with self.rt.engine.begin() as conn:
            claimed = sources_repo.claim_pending(conn, ids, self.owner)
        for row in claimed:
            self._take_one(row)
        return len(claimed)

    def _release_stale(self) -> None:
        """Files another process claimed and never finished (it died) go back to pending."""
        lease = self.rt.settings.lease_seconds
        with self.rt.engine.connect() as conn:
            if not sources_repo.has_stale_claims(conn, self.row["id"], self.owner, lease):
                return
        with self.rt.engine.begin() as conn:
            sources_repo.release_stale_claims(conn, self.row["id"], self.owner, lease)

    def _queue_name(self) -> str | None:
        if self.spec.workflow in ("", "auto"):
            return None
        with self.rt.engine.connect() as conn:
            return workflow_repo.current_workflow(conn, self.spec.workflow).definition.queue_name

    def _room(self) -> int:
        """Backpressure: how many more jobs the queue takes before it is over the source's limit."""
        limit = self.timing.max_queue
        try:
            queue = self._queue_name()
        except NotFound:
            self._error(f"workflow {self.spec.workflow} does not exist")
            return 0
        with self.rt.engine.connect() as conn:
            depth = sources_repo.queue_depth(conn, queue, limit)
        room = limit - depth
        self._set_waiting(None if room > 0 else f"backpressure: queue {queue or '(all)'} has {depth} waiting jobs")
        return room

    def _set_waiting(self, reason: str | None) -> None:
        if reason == self._waiting:
            return
        self._waiting = reason
        with self.rt.engine.begin() as conn:
            sources_repo.set_state(conn, self.row["id"], waiting_reason=reason)
        log.info("source %s: %s", self.name, reason or "taking files again")

    def _take_one(self, row: dict[str, Any]) -> None:
        try:
            job_input = self.backend.store(row, self.rt.storage, self.row["tenant_id"])
        except Vanished as exc:
            self._skip(row, "vanished", str(exc), report=False)
            return
        except Unreadable as exc:
            self._skip(row, "unreadable", str(exc))
            return
        try:
            job = self._submit(row, job_input)
        except (InvalidInput, Conflict, NotFound) as exc:
            self.rt.storage.delete(job_input.storage_key or "")
            self._skip(row, "rejected", exc.message)
            return
        except BaseException:
            self.rt.storage.delete(job_input.storage_key or "")
            raise
        if job is not None:
            announce(self.rt.engine, [job])
            self._count("submitted")

    def _request(self, row: dict[str, Any], job_input: Any) -> SubmitRequest:
        fields = file_fields(row["path"], size=row.get("size"), source=self.name)
        metadata = render_metadata(self.spec.metadata, fields)
        metadata.setdefault("source", {"name": self.name, "id": self.row["id"], "path": row["path"]})
        return SubmitRequest(job_input=job_input, workflow_code=self.spec.workflow, tenant_id=self.row["tenant_id"],
                             priority=self.spec.priority, metadata=metadata, submitted_by=f"source:{self.name}",
                             idempotency_key=f"source-{self.row['id']}-file-{row['id']}")

    def _submit(self, row: dict[str, Any], job_input: Any) -> SubmittedJob | None:
        """The job and the claim's end commit together; a claim lost meanwhile rolls the job back."""
        req = self._request(row, job_input)
        try:
            with self.rt.engine.begin() as conn:
                job = submit_in(conn, req)
                if not sources_repo.mark_submitted(conn, row["id"], self.owner, job_id=job.id,
                                                   content_hash=job_input.checksum):
                    raise _ClaimLost()
                if not job.replayed:
                    sources_repo.log_job_source(conn, job_id=job.id, tenant_id=self.row["tenant_id"], data={
                        "source": self.name, "source_id": self.row["id"], "path": row["path"],
                        "size": row.get("size"), "fingerprint": row["fingerprint"]})
        except _ClaimLost:
            self.rt.storage.delete(job_input.storage_key or "")
            return None
        if job.replayed:  # the file's job exists already: only the claim was left to close
            self.rt.storage.delete(job_input.storage_key or "")
            return None
        log.info("source %s: %s → job %s", self.name, row["path"], job.job_code)
        return job

    def _skip(self, row: dict[str, Any], outcome: str, reason: str, *, report: bool = True) -> None:
        """Record a file that will not become a job; unreadable and refused files are reported once."""
        with self.rt.engine.begin() as conn:
            if not sources_repo.mark_skipped(conn, row["id"], self.owner, f"{outcome}: {reason}"):
                return
            if report:
                outbox.add_event(conn, event_type=SKIPPED_EVENT, tenant_id=self.row["tenant_id"], payload={
                    "source_id": self.row["id"], "source": self.name, "path": row["path"], "size": row.get("size"),
                    "reason": outcome, "error": reason}, subject=f"source {self.name}: skipped {row['path']}",
                    message=reason)
        log.warning("source %s: skipped %s (%s: %s)", self.name, row["path"], outcome, reason)
        self._count(outcome)

    # ------------------------------------------------------------------ finish
    def finish(self) -> None:
        """Apply ``after`` to files whose job is over."""
        with self.rt.engine.connect() as conn:
            rows = sources_repo.finished_files(conn, self.row["id"])
        for row in rows:
            succeeded = row["job_status"] in SUCCEEDED_JOB
            error = None
            try:
                done = self.backend.finish(row, succeeded=succeeded)
            except Exception as exc:  # a file that cannot be moved stays; the row says why
                done, error = "error", f"after={self.spec.after}: {exc}"
                log.warning("source %s: %s", self.name, error)
            with self.rt.engine.begin() as conn:
                sources_repo.mark_finished(conn, row["id"], status="done" if succeeded else "failed",
                                           after_done=done, error=error)
            self._count("done" if succeeded else "failed")

    # ------------------------------------------------------------------ state
    def _error(self, message: str) -> None:
        log.warning("source %s: %s", self.name, message)
        with self.rt.engine.begin() as conn:
            sources_repo.set_state(conn, self.row["id"], last_error=message[:SOURCE_MESSAGE], last_scan_at=utcnow())

    def _count(self, outcome: str) -> None:
        telemetry.emit("source.file", source=self.name, outcome=outcome)


def guarded_round(runner: SourceRunner) -> float:
    """One round that never kills the loop: errors are logged and recorded on the source."""
    try:
        return runner.run_once()
    except MediamillError as exc:
        runner._error(exc.message)
    except Exception as exc:
        log.exception("source %s: round failed", runner.name)
        try:
            runner._error(f"{type(exc).__name__}: {exc}")
        except Exception:  # the database itself is away: try again next round
            pass
    return max(runner.timing.tick, 1.0)
