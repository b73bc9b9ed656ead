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

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mediamill import telemetry
from mediamill.errors import BREAKER_CLASSES, DETAIL_MESSAGE, SHORT_MESSAGE
from mediamill.store import outbox
from mediamill.store.tables import circuit_breakers as cb
from mediamill.store.tables import job_events, media_queue, workflow_jobs, workflow_steps
from mediamill.store.tables import step_executions as se
from mediamill.store.timeutil import utcnow

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
    conn.execute(job_events.insert().values(job_id=None, tenant_id="system", event_type="breaker",
                                            step_name=action, data={"action": action, "state": state, **data},
                                            created_at=utcnow()))
    if state in ("open", "closed"):
        verb = "opened" if state == "open" else "closed"
        outbox.add_events(conn, [outbox.event_row(event_type=f"breaker.{verb}", tenant_id=tenant,
                                                  payload={"action": action, "state": state, **data},
                                                  subject=f"Circuit breaker {action} {verb}")
                                 for tenant in waiting_tenants(conn, action, since=since or utcnow())])
    telemetry.emit("breaker.state", action=action, state=state)


def waiting_tenants(conn: Connection, action: str, *, since: datetime) -> list[str]:
    """Tenants whose jobs wait on ``action``: live jobs (in the queue) whose workflow version has a step
    running it, and jobs that ran it since ``since``. Reads the live queue and one index range."""
    wj, ws, mq = workflow_jobs, workflow_steps, media_queue
    live = (sa.select(wj.c.tenant_id)
            .select_from(mq.join(wj, wj.c.id == mq.c.job_id)
                         .join(ws, sa.and_(ws.c.workflow_id == wj.c.workflow_id,
                                           ws.c.version == sa.func.coalesce(wj.c.workflow_version, 1))))
            .where(mq.c.status.in_(("queued", "processing")), ws.c.action == action))
    ran = (sa.select(wj.c.tenant_id).select_from(se.join(wj, wj.c.id == se.c.job_id))
           .where(se.c.action == action, se.c.completed_at >= since))
    return sorted({str(t or "default") for t in conn.execute(sa.union(live, ran)).scalars()})


class Breakers:
    """Reads breaker states through a short cache; writes go straight to the database."""

    def __init__(self, engine: Engine, config: BreakerConfig, cache_seconds: float = 0.5) -> None:
        self.engine = engine
        self.config = config
        self._cache: dict[str, dict[str, Any]] = {}
        self._cache_at = 0.0
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()

    def _states(self, conn: Any = None, max_age: float | None = None) -> dict[str, dict[str, Any]]:
        with self._lock:
            if time.monotonic() - self._cache_at > (self._cache_seconds if max_age is None else max_age):
                query = sa.select(cb).where(cb.c.state != "closed")
                if conn is not None:  # the caller's transaction (SQLite: a second connection would wait for it)
                    rows = conn.execute(query).mappings().all()
                else:
                    with self.engine.connect() as own:
                        rows = own.execute(query).mappings().all()
                self._cache = {r["action"]: dict(r) for r in rows}
                self._cache_at = time.monotonic()
            return self._cache

    def warm(self, conn: Any) -> None:
        """Read the states on ``conn`` (inside a transaction already open) if the cache is stale."""
        self._states(conn)

    def invalidate(self) -> None:
        with self._lock:
            self._cache_at = 0.0

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
            res = conn.execute(cb.update().where(cb.c.action == action, cb.c.state == from_state)
                               .values(state="half_open", probe_job_id=job_id, updated_at=utcnow()))
            if res.rowcount == 1:
                _log(conn, action, "half_open", {"probe_job_id": job_id})
        self.invalidate()
        return Gate(True, probe=True) if res.rowcount == 1 else Gate(False, wait_seconds=1.0)

    def record_success(self, action: str, probe: bool) -> None:
        # whether a breaker is there to close: the cache as the claim left it will do (a half-open breaker is
        # closed by its own probe's success anyway), not a read of its own for each job
        if not probe and action not in self._states(max_age=STATES_HINT_SECONDS):
            return
        with self.engine.begin() as conn:
            opened = _opened_at(conn, action)
            res = conn.execute(cb.update().where(cb.c.action == action, cb.c.state == "half_open")
                               .values(state="closed", failure_count=0, success_count=0, opened_at=None,
                                       next_probe_at=None, probe_job_id=None, updated_at=utcnow()))
            if res.rowcount == 1:
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
        row = conn.execute(sa.select(
            sa.func.count().filter(se.c.status == "failed", se.c.error_class.in_(tuple(BREAKER_CLASSES))),
            # calls that say something about the action: successes and its own failures (bad input excluded)
            sa.func.count().filter(sa.or_(se.c.status == "completed",
                                          sa.and_(se.c.status == "failed",
                                                  se.c.error_class.in_(tuple(BREAKER_CLASSES))))))
            .where(se.c.action == action, se.c.completed_at >= since)).one()
        return int(row[0] or 0), int(row[1] or 0)

    def _open(self, conn: Connection, action: str, failures: int, total: int, message: str) -> None:
        now = utcnow()
        values = {"state": "open", "failure_count": failures, "success_count": total - failures, "opened_at": now,
                  "next_probe_at": now + timedelta(seconds=self.config.cooldown_seconds), "updated_at": now,
                  "last_error": message[:DETAIL_MESSAGE], "probe_job_id": None}
        existing = conn.execute(sa.select(cb.c.state).where(cb.c.action == action)).scalar()
        if existing is None:
            conn.execute(cb.insert().values(action=action, **values))
        elif existing == "closed":
            conn.execute(cb.update().where(cb.c.action == action, cb.c.state == "closed").values(**values))
        else:
            return
        _log(conn, action, "open", {"failures": failures, "calls": total, "error": message[:SHORT_MESSAGE]},
             since=now - timedelta(seconds=self.config.window_seconds))

    def _reopen(self, action: str, message: str, immediate: bool = False) -> None:
        now = utcnow()
        delay = 0 if immediate else self.config.cooldown_seconds
        with self.engine.begin() as conn:
            res = conn.execute(cb.update().where(cb.c.action == action, cb.c.state == "half_open")
                               .values(state="open", opened_at=now, next_probe_at=now + timedelta(seconds=delay),
                                       updated_at=now, last_error=message[:DETAIL_MESSAGE], probe_job_id=None))
            if res.rowcount == 1 and not immediate:
                _log(conn, action, "reopened", {"error": message[:SHORT_MESSAGE]})
        self.invalidate()


def _opened_at(conn: Connection, action: str) -> datetime | None:
    return conn.execute(sa.select(cb.c.opened_at).where(cb.c.action == action)).scalar()


def reset_breaker(conn: Connection, action: str, *, window_seconds: float = BreakerConfig.window_seconds) -> bool:
    """Close a breaker by hand (notified like a closing probe: to the tenants that ran the action from
    ``window_seconds`` before it opened on, and those waiting)."""
    opened = _opened_at(conn, action)
    res = conn.execute(cb.update().where(cb.c.action == action)
                       .values(state="closed", failure_count=0, success_count=0, opened_at=None,
                               next_probe_at=None, probe_job_id=None, updated_at=utcnow()))
    if res.rowcount:
        since = opened - timedelta(seconds=window_seconds) if opened else None
        _log(conn, action, "closed", {"reason": "reset by operator"}, since=since)
    return bool(res.rowcount)
