"""The :class:`Notifier`: the dispatcher and the alert evaluator as background threads.

Each is a :class:`mediamill.loops.Loop` run by :class:`mediamill.loops.LoopRunner`, the same runner the
worker's roles use: a failed round is logged (a database error as one warning line, anything else with its
traceback) and tried again after ``min(5, notify_poll_seconds * 5)`` seconds.

``serve`` runs one in-process (``Notifier(...).start()`` … ``stop()``); ``mediamill notifier``
runs one standalone. Any number may run against one database at once.
"""

from __future__ import annotations

import threading
import time

from mediamill.config import Settings
from mediamill.loops import Backoff, LoopRunner
from mediamill.notify.alerting import Alerter
from mediamill.notify.delivery import Dispatcher, default_worker_id
from mediamill.notify.dispatcher import prune
from mediamill.observability.logging import bind_job, get_logger
from mediamill.store.db import Engine

log = get_logger("mediamill.notify")
PRUNE_EVERY_S = 3600.0


class Notifier:
    """Runs delivery rounds every ``notify_poll_seconds`` and alert rounds every ``alert_eval_seconds``."""

    def __init__(self, *, engine: Engine, settings: Settings, worker_id: str | None = None,
                 alerts: bool = True, deliveries: bool = True) -> None:
        self.engine = engine
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self._alerts_on = alerts
        self._deliveries_on = deliveries
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._dispatcher: Dispatcher | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Notifier:
        """Start the background threads (returns self)."""
        if self._threads:
            return self
        self._stop.clear()
        if self._deliveries_on:
            self._dispatcher = Dispatcher(engine=self.engine, settings=self.settings, worker_id=self.worker_id)
            self._spawn("mediamill-dispatcher", _Deliveries(self, self._dispatcher))
        if self._alerts_on:
            self._spawn("mediamill-alerter", _Alerts(self))
        log.info("notifier started", worker=self.worker_id)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the deliveries in flight and stop (undelivered rows stay pending for the next run)."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self._dispatcher is not None:
            self._dispatcher.close()
            self._dispatcher = None
        log.info("notifier stopped", worker=self.worker_id)

    def wake(self) -> None:
        """Run a delivery round now (e.g. right after the engine committed an event)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> Notifier:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- loops -----------------------------------------------------------------------------
    def _spawn(self, name: str, loop: _Deliveries | _Alerts) -> None:
        pause = min(5.0, self.settings.notify_poll_seconds * 5)  # the database may be away for a moment
        runner = LoopRunner(loop, self._stop, thread_name=name, backoff=Backoff(first=pause, most=pause),
                            logger=log)
        runner.start()
        self._threads.append(runner.thread)

    def _prune(self) -> int:
        with self.engine.begin() as conn:
            return prune(conn, older_than_days=self.settings.notify_retention_days)


class _Deliveries:
    """One delivery round (and, once an hour, the prune of old deliveries), again at once after a busy round,
    else after ``notify_poll_seconds`` or a wake-up."""

    name = "notifier delivery round"

    def __init__(self, notifier: Notifier, dispatcher: Dispatcher) -> None:
        self.notifier = notifier
        self.dispatcher = dispatcher
        self.last_prune = 0.0
        self._bound = False

    def run_once(self) -> float | None:
        n = self.notifier
        if n._stop.is_set():
            return None
        if not self._bound:  # every log line of this thread names the notifier
            bind_job(worker=n.worker_id)
            self._bound = True
        busy = self.dispatcher.run_once()
        if time.monotonic() - self.last_prune > PRUNE_EVERY_S:
            self.last_prune = time.monotonic()
            n._prune()
        if not busy:  # a full batch means more may be due: go again at once
            n._wake.wait(n.settings.notify_poll_seconds)
            n._wake.clear()
        return 0


class _Alerts:
    """One alert round every ``alert_eval_seconds``."""

    name = "notifier alert round"

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.alerter = Alerter(engine=notifier.engine, settings=notifier.settings)
        self._bound = False

    def run_once(self) -> float:
        if not self._bound:
            bind_job(worker=self.notifier.worker_id)
            self._bound = True
        self.alerter.evaluate_once()
        return self.notifier.settings.alert_eval_seconds
