"""A warm, recycled pool of child processes that run steps in isolation.

Children come from a forkserver that has already imported the actions (so a step does not
pay ~100 ms of process start and imports), each in its own process group, with resource
limits (address space, CPU time per step, file size). A crash, a limit or a hang kills only
the child (and the tools it started) and becomes a classified step failure; the pool
replaces the child. A child is recycled after ``max_tasks`` steps to bound leaks.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from mediamill.config import MediaLimits
from mediamill.errors import InternalError, MediamillError, ResourceExceeded, StepTimeout

_CTX: Any = None
_CTX_LOCK = threading.Lock()
STEP_PROCESS_NAME = "mediamill-step"
# what multiprocessing tells a new process to re-run of the parent's __main__ before its target
_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")


def _context() -> Any:
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["mediamill.engine.child"])
            _skip_main_in_step_children()
            _CTX = ctx
        return _CTX


def _skip_main_in_step_children() -> None:
    """A step child does not re-run the parent's ``__main__``.

    multiprocessing makes every new process import the parent's main module first (as ``__mp_main__``).
    For a worker that is the whole CLI (``python -m mediamill.cli.main`` or the ``mediamill`` script): the
    store, the API, SQLAlchemy, uvicorn — about a CPU-second per child, paid after ``warm()`` returned, on
    the step's clock, in a process that must not reach the database. The child's target lives in
    ``mediamill.engine.child`` (already imported by the forkserver), so it needs nothing of ``__main__``.
    """
    from multiprocessing import spawn

    prepare = spawn.get_preparation_data
    if getattr(prepare, "_mediamill_step", False):
        return

    def preparation_data(name: str) -> dict[str, Any]:
        data = prepare(name)
        if name == STEP_PROCESS_NAME:
            for key in _MAIN_KEYS:
                data.pop(key, None)
        return data

    preparation_data._mediamill_step = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = preparation_data


class Cancelled(Exception):
    """The step's job was cancelled while the step ran; its child was killed."""


@dataclass
class _Child:
    process: Any
    conn: Connection
    tasks: int = 0

    @property
    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def kill(self) -> None:
        """Kill the child and everything it started (its process group)."""
        pid = self.process.pid
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.join(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()


_SIGNAL_CLASS: dict[int, tuple[str, str]] = {
    signal.SIGXCPU: ("resource", "the step used more CPU time than allowed"),
    signal.SIGXFSZ: ("resource", "the step wrote a file larger than allowed"),
    signal.SIGKILL: ("resource", "the step's process was killed (out of memory?)"),
    signal.SIGSEGV: ("internal", "the step's process crashed (segmentation fault)"),
    signal.SIGABRT: ("internal", "the step's process aborted"),
    signal.SIGBUS: ("internal", "the step's process crashed (bus error)"),
}


def classify_exit(exitcode: int | None) -> MediamillError:
    """Turn a dead child's exit status into a classified step error."""
    if exitcode is not None and exitcode < 0:
        klass, msg = _SIGNAL_CLASS.get(-exitcode, ("internal", f"the step's process died with signal {-exitcode}"))
        return ResourceExceeded(msg) if klass == "resource" else InternalError(msg)
    return InternalError(f"the step's process exited unexpectedly (code {exitcode})")


class ChildPool:
    """Run tasks in warm child processes; ``run`` blocks the calling thread until the task ends."""

    def __init__(self, *, size: int, max_tasks: int, limits: MediaLimits) -> None:
        self.size = max(1, size)
        self.max_tasks = max_tasks
        self.limits = limits
        self._idle: queue.LifoQueue[_Child] = queue.LifoQueue()
        self._count = 0
        self._lock = threading.Lock()
        self._closed = False

    def _spawn(self) -> _Child:
        from mediamill.engine.child import child_main

        parent, child = _context().Pipe(duplex=True)
        proc = _context().Process(target=child_main, args=(child, self.limits.model_dump()), daemon=True,
                                  name=STEP_PROCESS_NAME)
        proc.start()
        child.close()
        return _Child(proc, parent)

    def warm(self, n: int | None = None) -> None:
        """Start children ahead of need."""
        for _ in range(min(n or self.size, self.size)):
            with self._lock:
                if self._count >= self.size:
                    return
                self._count += 1
            self._idle.put(self._spawn())

    def _acquire(self) -> _Child:
        while True:
            try:
                child = self._idle.get_nowait()
            except queue.Empty:
                with self._lock:
                    can_spawn = self._count < self.size
                    if can_spawn:
                        self._count += 1
                if can_spawn:
                    return self._spawn()
                child = self._idle.get()
            if child.alive:
                return child
            self._discard(child)

    def _discard(self, child: _Child) -> None:
        child.kill()
        with self._lock:
            self._count -= 1

    def _release(self, child: _Child) -> None:
        child.tasks += 1
        if self._closed or child.tasks >= self.max_tasks or not child.alive:
            self._discard(child)
        else:
            self._idle.put(child)

    def run(self, task: dict[str, Any], *, timeout: float | None, on_progress: Callable[[int, float], None],
            cancelled: threading.Event | None = None, on_start: Callable[[_Child], None] | None = None
            ) -> dict[str, Any]:
        """Run one task; returns the child's result dict or raises a classified MediamillError."""
        child = self._acquire()
        deadline = time.monotonic() + timeout if timeout else None
        try:
            child.conn.send(task)
        except (OSError, EOFError):
            self._discard(child)
            raise InternalError("could not hand the step to a child process") from None
        try:
            if on_start:  # while the child works (an error here stops it: the child is discarded)
                on_start(child)
            result = self._wait(child, deadline, on_progress, cancelled, timeout)
        except BaseException:
            self._discard(child)
            raise
        self._release(child)
        return result

    def _wait(self, child: _Child, deadline: float | None, on_progress: Callable[[int, float], None],
              cancelled: threading.Event | None, timeout: float | None) -> dict[str, Any]:
        while True:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            if deadline is not None and time.monotonic() > deadline:
                raise StepTimeout(f"the step exceeded its timeout of {timeout:g} s")
            try:
                ready = child.conn.poll(0.05)
            except (OSError, EOFError):
                ready = True
            if not ready:
                if not child.alive:
                    child.process.join(timeout=1)
                    raise classify_exit(child.process.exitcode)
                continue
            try:
                msg = child.conn.recv()
            except (EOFError, OSError):
                child.process.join(timeout=2)
                raise classify_exit(child.process.exitcode) from None
            if msg.get("kind") == "progress":
                on_progress(int(msg.get("index", 0)), float(msg["percent"]))
                continue
            return dict(msg)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                child = self._idle.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                child.conn.send(None)
            child.process.join(timeout=1)
            if child.alive:
                child.kill()
