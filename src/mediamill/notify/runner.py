"""The :class:`Notifier`: the dispatcher and the alert evaluator as background threads.

``serve`` runs one in-process (``Notifier(...).start()`` … ``stop()``); ``mediamill notifier``
runs one standalone. Any number may run against one database at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mediamill.config import Settings
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
            self._spawn("mediamill-dispatcher", self._dispatch_loop)
        if self._alerts_on:
            self._spawn("mediamill-alerter", self._alert_loop)
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
    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _dispatch_loop(self) -> None:
        assert self._dispatcher is not None
        dispatcher = self._dispatcher
        last_prune = 0.0
        with bind_job(worker=self.worker_id):
            while not self._stop.is_set():
                busy = self._guarded("delivery round", dispatcher.run_once)
                if time.monotonic() - last_prune > PRUNE_EVERY_S:
                    last_prune = time.monotonic()
                    self._guarded("prune", self._prune)
                if not busy:  # a full batch means more may be due: go again at once
                    self._wake.wait(self.settings.notify_poll_seconds)
                    self._wake.clear()

    def _alert_loop(self) -> None:
        alerter = Alerter(engine=self.engine, settings=self.settings)
        with bind_job(worker=self.worker_id):
            while not self._stop.is_set():
                self._guarded("alert round", alerter.evaluate_once)
                self._stop.wait(self.settings.alert_eval_seconds)

    def _prune(self) -> int:
        with self.engine.begin() as conn:
            return prune(conn, older_than_days=self.settings.notify_retention_days)

    def _guarded(self, what: str, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except Exception:  # the database may be away for a moment: log, back off, try again
            log.exception(f"notifier {what} failed")
            self._stop.wait(min(5.0, self.settings.notify_poll_seconds * 5))
            return None
