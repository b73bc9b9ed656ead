"""Circuit breakers per action: closed → open (failure rate over a sliding window) → half-open probe → closed.

Only failures of classes that are the step's fault count (transient, internal); a corrupt
upload never opens a breaker. While a breaker is open, jobs reaching the action wait in the
queue until the next probe time — they do not fail.

``breaker.opened`` / ``breaker.closed`` are notified to every tenant whose jobs wait on the
breaker: tenants with live jobs whose workflow uses the action, and tenants whose jobs ran the
action while the breaker was deciding (its failure window, or since it opened) — one event per
tenant, delivered to that tenant's channels that accept it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mediamill import telemetry
from mediamill.errors import BREAKER_CLASSES, DETAIL_MESSAGE, SHORT_MESSAGE
from mediamill.store import breakers_repo, outbox
from mediamill.store.breakers_repo import waiting_tenants
from mediamill.store.db import Connection, Engine
from mediamill.store.timeutil import utcnow

__all__ = ["STATES_HINT_SECONDS", "BreakerConfig", "Breakers", "Gate", "reset_breaker"]

# how old the cached states may be when they only tell whether a success has a breaker to close
STATES_HINT_SECONDS = 10.0


@dataclass(frozen=True)
class BreakerConfig:
    window_seconds: int = 300
    min_calls: int = 5
    failure_rate: float = 0.5
    cooldown_seconds: int = 30
    probe_stale_seconds: int = 120  # a half-open probe whose worker died frees the breaker


@dataclass(frozen=True)
class Gate:
    """What a worker may do with an action right now."""

    allowed: bool
    probe: bool = False
    wait_seconds: float = 0.0


def _log(conn: Connection, action: str, state: str, data: dict[str, Any], *,
         since: datetime | None = None) -> None:
    """Record a transition; an opening or closing is also notified to the tenants it concerns
    (those with jobs that ran the action since ``since``, or wait to run it)."""
    breakers_repo.log_transition(conn, action, state, data)
    if state in ("open", "closed"):
        verb = "opened" if state == "open" else "closed"
        outbox.add_events(conn, [outbox.event_row(event_type=f"breaker.{verb}", tenant_id=tenant,
                                                  payload={"action": action, "state": state, **data},
                                                  subject=f"Circuit breaker {action} {verb}")
                                 for tenant in waiting_tenants(conn, action, since=since or utcnow())])
    telemetry.emit("breaker.state", action=action, state=state)


class Breakers:
    """Reads breaker states through a short cache; writes go straight to the database."""

    def __init__(self, engine: Engine, config: BreakerConfig, cache_seconds: float = 0.5) -> None:
        self.engine = engine
        self.config = config
        self._cache: dict[str, dict[str, Any]] = {}
        self._cache_at = 0.0
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._generation = 0  # bumped by invalidate(): a read begun before it is not cached

    def _states(self, conn: Any = None, max_age: float | None = None) -> dict[str, dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._cache_at <= (self._cache_seconds if max_age is None else max_age):
                return self._cache
            generation = self._generation
        # read without the lock: a thread holding it while waiting for the database (SQLite's one writer) would
        # deadlock with a claim whose transaction holds the database and asks for the states
        if conn is not None:  # the caller's transaction (SQLite: a second connection would wait for it)
            states = breakers_repo.not_closed(conn)
        else:
            with self.engine.connect() as own:
                states = breakers_repo.not_closed(own)
        with self._lock:
            if generation == self._generation:  # not invalidated meanwhile (else the next read refreshes)
                self._cache, self._cache_at = states, time.monotonic()
            return states

    def warm(self, conn: Any) -> None:
        """Read the states on ``conn`` (inside a transaction already open) if the cache is stale."""
        self._states(conn)

    def invalidate(self) -> None:
        with self._lock:
            self._cache_at = 0.0
            self._generation += 1

    def is_closed(self, action: str, conn: Any = None) -> bool:
        """Whether ``action``'s breaker is closed (read on ``conn`` when the cache needs a refresh and it is given)."""
        return action not in self._states(conn)

    def gate(self, action: str, job_id: int) -> Gate:
        state = self._states().get(action)
        if state is None:
            return Gate(True)
        now = utcnow()
        if state["state"] == "open" and state["next_probe_at"] and state["next_probe_at"] <= now:
            return self._try_probe(action, job_id)
        if state["state"] == "half_open" and state["updated_at"] and \
                (now - state["updated_at"]).total_seconds() > self.config.probe_stale_seconds:
            return self._try_probe(action, job_id, from_state="half_open")
        wait = (state["next_probe_at"] - now).total_seconds() if state.get("next_probe_at") else 1.0
        return Gate(False, wait_seconds=max(0.5, wait))

    def _try_probe(self, action: str, job_id: int, from_state: str = "open") -> Gate:
        with self.engine.begin() as conn:
            taken = breakers_repo.take_probe(conn, action, job_id, from_state=from_state)
            if taken:
                _log(conn, action, "half_open", {"probe_job_id": job_id})
        self.invalidate()
        return Gate(True, probe=True) if taken else Gate(False, wait_seconds=1.0)

    def record_success(self, action: str, probe: bool) -> None:
        # whether a breaker is there to close: the cache as the claim left it will do (a half-open breaker is
        # closed by its own probe's success anyway), not a read of its own for each job
        if not probe and action not in self._states(max_age=STATES_HINT_SECONDS):
            return
        with self.engine.begin() as conn:
            opened = breakers_repo.opened_at(conn, action)
            if breakers_repo.close_half_open(conn, action):
                # the tenants told it opened: whoever ran the action from its failure window on
                since = opened - timedelta(seconds=self.config.window_seconds) if opened else None
                _log(conn, action, "closed", {"reason": "probe succeeded"}, since=since)
        self.invalidate()

    def record_failure(self, action: str, error_class: str, probe: bool, message: str = "") -> None:
        if error_class not in BREAKER_CLASSES:
            if probe:  # the probe proved nothing about the action; let the next job probe
                self._reopen(action, message, immediate=True)
            return
        if probe:
            self._reopen(action, message)
            return
        with self.engine.begin() as conn:
            failures, total = self._window(conn, action)
            if total < self.config.min_calls or failures / total < self.config.failure_rate:
                return
            self._open(conn, action, failures, total, message)
        self.invalidate()

    def _window(self, conn: Connection, action: str) -> tuple[int, int]:
        since = utcnow() - timedelta(seconds=self.config.window_seconds)
        # calls that say something about the action: successes and its own failures (bad input excluded)
        return breakers_repo.window(conn, action, since=since, failing=BREAKER_CLASSES)

    def _open(self, conn: Connection, action: str, failures: int, total: int, message: str) -> None:
        now = utcnow()
        values = {"state": "open", "failure_count": failures, "success_count": total - failures, "opened_at": now,
                  "next_probe_at": now + timedelta(seconds=self.config.cooldown_seconds), "updated_at": now,
                  "last_error": message[:DETAIL_MESSAGE], "probe_job_id": None}
        existing = breakers_repo.state_of(conn, action)
        if existing is None:
            breakers_repo.insert(conn, action, values)
        elif existing == "closed":
            breakers_repo.open_closed(conn, action, values)
        else:
            return
        _log(conn, action, "open", {"failures": failures, "calls": total, "error": message[:SHORT_MESSAGE]},
             since=now - timedelta(seconds=self.config.window_seconds))

    def _reopen(self, action: str, message: str, immediate: bool = False) -> None:
        now = utcnow()
        delay = 0 if immediate else self.config.cooldown_seconds
        with self.engine.begin() as conn:
            reopened = breakers_repo.reopen(conn, action, now=now, next_probe_at=now + timedelta(seconds=delay),
                                            last_error=message[:DETAIL_MESSAGE])
            if reopened and not immediate:
                _log(conn, action, "reopened", {"error": message[:SHORT_MESSAGE]})
        self.invalidate()


def reset_breaker(conn: Connection, action: str, *, window_seconds: float = BreakerConfig.window_seconds) -> bool:
    """Close a breaker by hand (notified like a closing probe: to the tenants that ran the action from
    ``window_seconds`` before it opened on, and those waiting)."""
    opened = breakers_repo.opened_at(conn, action)
    done = breakers_repo.reset(conn, action)
    if done:
        since = opened - timedelta(seconds=window_seconds) if opened else None
        _log(conn, action, "closed", {"reason": "reset by operator"}, since=since)
    return done
