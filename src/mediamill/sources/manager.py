"""The :class:`SourceManager`: which sources this process runs, and their threads.

Every process that runs sources (``mediamill serve``, ``mediamill sources run``) asks, every
few seconds, for the lease of each enabled source. The one holding a source's lease runs it;
the others stand by and take over when the lease lapses (a dead process) or is released (a
stopped one). Folder sources are woken by file-system events through ``watchfiles`` (and, on
Linux, take a file as soon as its writer closed it — :mod:`.closewatch`) and are scanned on a
timer as well — the timer alone where events do not exist (``polling: true``, network mounts,
or when the watcher cannot start).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from mediamill.runtime import Runtime
from mediamill.sources import closewatch
from mediamill.sources.backends import FolderBackend
from mediamill.sources.intake import SourceRunner, guarded_round
from mediamill.store import sources_repo

log = logging.getLogger("mediamill.sources")


def default_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _Running:
    """A runner with its thread and, for folders, its file-system watcher."""

    def __init__(self, runner: SourceRunner, version: Any) -> None:
        self.runner = runner
        self.version = version
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"mediamill-source-{runner.name}", daemon=True)
        self.watchers: list[threading.Thread] = []

    def start(self) -> None:
        self.thread.start()
        backend = self.runner.backend
        if isinstance(backend, FolderBackend) and not self.runner.spec.polling:
            self._spawn("watch", self._watch, backend.watch_root())
            if closewatch.available():
                self._spawn("close", self._watch_closes, backend)

    def _spawn(self, kind: str, target: Any, arg: Any) -> None:
        thread = threading.Thread(target=target, args=(arg,), name=f"mediamill-{kind}-{self.runner.name}",
                                  daemon=True)
        thread.start()
        self.watchers.append(thread)

    def _watch_closes(self, backend: FolderBackend) -> None:
        """Files closed after writing are taken without waiting for them to settle (Linux inotify)."""

        def done(path: Path) -> None:
            backend.closed_after_writing(path)
            self.runner.wake.set()

        try:
            closewatch.CloseWatcher(backend.watch_root(), recursive=self.runner.spec.recursive, on_done=done
                                    ).run(self.stop)
        except Exception as exc:  # e.g. the inotify watch limit: the size-and-mtime rule still holds
            log.warning("source %s: close-after-write events unavailable (%s)", self.runner.name, exc)

    def _loop(self) -> None:
        while not self.stop.is_set():
            wait = guarded_round(self.runner)
            if wait > 0:
                self.runner.wake.wait(wait)

    def _watch(self, root: Path) -> None:
        """Turn file-system events into wake-ups; on any failure the timer keeps the source going."""
        try:
            from watchfiles import watch

            logging.getLogger("watchfiles").setLevel(logging.WARNING)  # not a log line per change it sees
            for _changes in watch(root, stop_event=self.stop, recursive=self.runner.spec.recursive,
                                  debounce=200, rust_timeout=1000, yield_on_timeout=False, raise_interrupt=False):
                self.runner.wake.set()
        except Exception as exc:
            log.warning("source %s: file-system events unavailable (%s); polling every %.0f s", self.runner.name,
                        exc, self.runner.timing.poll)

    def halt(self, timeout: float) -> None:
        self.stop.set()
        self.runner.wake.set()
        self.thread.join(timeout)
        for watcher in self.watchers:
            watcher.join(timeout)


class SourceManager:
    """Elects this process for sources, runs the ones it leads, stops the ones it lost."""

    def __init__(self, rt: Runtime, *, owner: str | None = None) -> None:
        self.rt = rt
        self.owner = owner or default_owner_id()
        self._running: dict[int, _Running] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SourceManager:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="mediamill-sources", daemon=True)
            self._thread.start()
            log.info("sources: running as %s", self.owner)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every runner and hand the leases back, so another process takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for source_id in list(self._running):
            self._halt(source_id, timeout)

    @property
    def leading(self) -> list[int]:
        """Ids of the sources this process runs now."""
        return sorted(self._running)

    def wake(self, source_id: int) -> None:
        running = self._running.get(source_id)
        if running is not None:
            running.runner.wake.set()

    def _loop(self) -> None:
        interval = max(0.2, self.rt.settings.lease_seconds / 3)
        while not self._stop.is_set():
            try:
                self.elect_once()
            except Exception:  # the database is away: keep the runners, ask again soon
                log.exception("sources: election round failed")
            self._stop.wait(interval)

    def elect_once(self) -> None:
        """Renew or take the leases of enabled sources; start and stop runners to match."""
        with self.rt.engine.connect() as conn:
            rows = {r["id"]: r for r in sources_repo.list_sources(conn, enabled_only=True)}
        held: set[int] = set()
        for source_id in rows:
            with self.rt.engine.begin() as conn:
                if sources_repo.acquire_lease(conn, source_id, self.owner, self.rt.settings.lease_seconds):
                    held.add(source_id)
        for source_id in list(self._running):
            running = self._running[source_id]
            if source_id not in held:
                self._halt(source_id, 10.0)  # disabled, deleted or lost: the guarded release is a no-op then
            elif running.version != rows[source_id]["updated_at"]:
                self._halt(source_id, 10.0, release=False)  # changed: restart with the new settings
        for source_id in held - set(self._running):
            self._begin(rows[source_id])

    def _begin(self, row: dict[str, Any]) -> None:
        try:
            runner = SourceRunner(self.rt, row, self.owner)
        except Exception as exc:  # a source that cannot be built (bad config) says so on its page
            with self.rt.engine.begin() as conn:
                sources_repo.set_state(conn, row["id"], last_error=f"cannot start: {exc}")
            return
        running = _Running(runner, row["updated_at"])
        self._running[row["id"]] = running
        running.start()
        log.info("source %s: running here (%s)", runner.name, row["kind"])

    def _halt(self, source_id: int, timeout: float, *, release: bool = True) -> None:
        running = self._running.pop(source_id, None)
        if running is None:
            return
        running.halt(timeout)
        if release:
            try:
                with self.rt.engine.begin() as conn:
                    sources_repo.release_lease(conn, source_id, self.owner)
            except Exception:  # the lease lapses on its own
                log.debug("sources: could not release %s", source_id)
