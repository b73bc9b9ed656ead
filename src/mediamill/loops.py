"""Background loops: one protocol, and one runner that owns the thread, the guard and the back-off.

A :class:`Loop` does one round of its work at a time (``run_once``) and says how long to wait before the next.
A :class:`LoopRunner` runs it in a daemon thread until it is done or the stop event is set, and is the one place
that decides what a failed round costs: a database error (the database went away, refused, timed out) is
logged as one warning line, any other exception with its traceback; either way the runner waits a back-off
(doubling from ``Backoff.first`` up to ``Backoff.most``, reset by a round that succeeds) and goes on. The
worker's roles (``engine/roles.py``), the notifier's rounds (``notify/runner.py``) and the API's sweeps
(``api/app.py``) all run this way.

This module sits beside ``config`` and ``runtime``: the engine, the notifier and the API import it, and it
imports nothing of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mediamill.store.connections import DATABASE_ERRORS

log = logging.getLogger("mediamill.loops")


class Loop(Protocol):
    """A background role, one round at a time."""

    @property
    def name(self) -> str:
        """How its log lines call it."""

    def run_once(self) -> float | None:
        """One round of work. Returns how long to wait before the next round, in seconds (the wait ends early,
        and so does the loop, when the stop event is set; 0: go again at once, and a loop that goes again at
        once looks at the stop event itself), or None when the loop is done: its thread ends."""


@dataclass(frozen=True)
class Backoff:
    """How long a loop waits after a failed round: ``first``, doubled after every further failure up to
    ``most``; a round that succeeds starts it over."""

    first: float = 0.1
    most: float = 2.0

    def after(self, current: float) -> float:
        return min(current * 2, self.most)


class Periodic:
    """A loop of one callable: ``fn()`` every ``every`` seconds."""

    def __init__(self, name: str, fn: Callable[[], object], every: float) -> None:
        self.name = name
        self.fn = fn
        self.every = every

    def run_once(self) -> float:
        self.fn()
        return self.every


class LoopRunner:
    """Runs a :class:`Loop` in a daemon thread named ``thread_name`` until it returns None or ``stop`` is set.

    ``start_after``: seconds to wait (on ``stop``) before the first round. ``logger``: where failed rounds are
    reported (a stdlib or structlog logger; this module's by default).
    """

    def __init__(self, loop: Loop, stop: threading.Event, *, thread_name: str | None = None,
                 backoff: Backoff | None = None, start_after: float = 0.0, logger: Any = None) -> None:
        self.loop = loop
        self.stop = stop
        self.backoff = backoff or Backoff()
        self.start_after = start_after
        self.log = logger if logger is not None else log
        self.thread = threading.Thread(target=self.run, name=thread_name or loop.name, daemon=True)

    @property
    def name(self) -> str:
        return self.thread.name

    def start(self) -> LoopRunner:
        self.thread.start()
        return self

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def run(self) -> None:
        """The guarded loop, in the calling thread (``start`` runs it in the runner's own)."""
        if self.stop.is_set() or (self.start_after > 0 and self.stop.wait(self.start_after)):
            return
        name = self.loop.name
        backoff = self.backoff.first
        while True:
            try:
                wait = self.loop.run_once()
            except DATABASE_ERRORS as exc:  # the database went away: wait and carry on
                first_line = str(exc).split("\n")[0]
                self.log.warning(f"{name}: database error, retrying: {first_line}")
            except Exception:
                self.log.exception(f"{name} crashed; restarting")
            else:
                if wait is None:
                    return
                backoff = self.backoff.first
                if wait > 0 and self.stop.wait(wait):
                    return
                continue
            if self.stop.wait(backoff):
                return
            backoff = self.backoff.after(backoff)
