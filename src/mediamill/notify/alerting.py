"""The alert evaluator: rules → observations → ``alerts`` rows moving pending → firing → resolved.

An alert instance is one rule plus one set of labels (e.g. ``error_class=transient``), so a
rule aggregated by error class fires once per class, not once per failed job. An instance whose
condition holds starts ``pending``; when it has held for the rule's ``for`` it becomes
``firing`` and writes one ``alert.firing`` outbox event; when the condition clears it becomes
``resolved`` and writes one ``alert.resolved`` event. A pending instance that clears before
firing is forgotten (nobody was told). Evaluations are serialised across processes (an advisory
lock on PostgreSQL, the write lock on SQLite), so several notifiers never double-fire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mediamill.config import Settings
from mediamill.notify.alert_rules import AlertRule, load_rules
from mediamill.observability.dbgauges import parse_pools_column
from mediamill.store import liveness, outbox
from mediamill.store import tables as t
from mediamill.store.routing_repo import REVIEW_QUEUE, review_backlog
from mediamill.store.timeutil import iso, utcnow

_LOCK_KEY = 0x6D6D_616C_6572  # "mmaler": one alert evaluator at a time across processes


@dataclass(frozen=True)
class Observation:
    """One alert instance's current reading."""

    labels: dict[str, str]
    value: float
    active: bool
    summary: str
    threshold: float | None = None

    @property
    def key(self) -> str:
        return label_key(self.labels)


@dataclass
class Transition:
    rule: str
    severity: str
    state: str  # pending | firing | resolved | cleared
    labels: dict[str, str] = field(default_factory=dict)
    alert_id: int | None = None
    event_id: str | None = None


def label_key(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# --------------------------------------------------------------------------- conditions
def observe(conn: Connection, rule: AlertRule, settings: Settings, now: datetime) -> list[Observation]:
    """Read a rule's condition from the database (small indexed queries only)."""
    return _OBSERVERS[rule.kind](conn, rule, settings, now)


def _error_rate(conn: Connection, rule: AlertRule, _s: Settings, now: datetime) -> list[Observation]:
    """Failed / finished over the window, as ``GET /v1/analytics/summary`` counts them (``finished_at``)."""
    window = float(rule.param("window_seconds"))
    total, failed = _finished_since(conn, now - timedelta(seconds=window), rule.param("workflow"))
    failures: dict[str, int] = {}
    for error_class, n in failed:
        key = (error_class or "internal") if rule.param("by") == "error_class" else ""
        failures[key] = failures.get(key, 0) + n
    if rule.param("by") != "error_class":
        failures.setdefault("", 0)
    threshold, minimum = float(rule.param("threshold")), int(rule.param("min_samples"))
    out = []
    for error_class, n in failures.items():
        rate = n / total if total else 0.0
        labels = {"error_class": error_class} if error_class else {}
        what = f"{error_class} failures" if error_class else "failures"
        out.append(Observation(labels, rate, total >= minimum and rate > threshold, threshold=threshold,
                               summary=f"{what}: {rate:.1%} of {total} jobs in {window:.0f}s "
                                       f"(threshold {threshold:.1%})"))
    return out


def _finished_since(conn: Connection, cutoff: datetime,
                    workflow: str | None) -> tuple[int, list[tuple[str | None, int]]]:
    """(jobs finished since ``cutoff``, failed ones per error class) — every terminal state carries
    ``finished_at``, failed and cancelled jobs included."""
    j, wd = t.workflow_jobs, t.workflow_definitions
    query = (sa.select(j.c.status, j.c.error_class, sa.func.count())
             .where(j.c.finished_at >= cutoff, j.c.shadow_of.is_(None)).group_by(j.c.status, j.c.error_class))
    if workflow:
        query = query.where(j.c.workflow_id.in_(sa.select(wd.c.id).where(wd.c.workflow_code == workflow)))
    rows = conn.execute(query).all()
    failed = [(klass, int(n)) for status, klass, n in rows if status == "failed"]
    return sum(int(n) for _s, _k, n in rows), failed


def _due(now: datetime) -> Any:
    mq = t.media_queue
    return sa.and_(mq.c.status == "queued", sa.or_(mq.c.scheduled_time.is_(None), mq.c.scheduled_time <= now))


def _waiting_by_queue(conn: Connection, now: datetime, queue: str | None) -> dict[str, tuple[int, datetime]]:
    mq = t.media_queue
    query = (sa.select(mq.c.queue_name, sa.func.count(), sa.func.min(sa.func.coalesce(mq.c.scheduled_time,
                                                                                       mq.c.created_at)))
             .where(_due(now)).group_by(mq.c.queue_name))
    if queue:
        query = query.where(mq.c.queue_name == queue)
    return {q or "default": (n, oldest) for q, n, oldest in conn.execute(query)}


def _queue_wait(conn: Connection, rule: AlertRule, _s: Settings, now: datetime) -> list[Observation]:
    threshold = float(rule.param("threshold_seconds"))
    out = []
    for queue, (n, oldest) in _waiting_by_queue(conn, now, rule.param("queue")).items():
        wait = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
        out.append(Observation({"queue": queue}, wait, wait > threshold, threshold=threshold,
                               summary=f"queue {queue}: oldest of {n} due jobs has waited {wait:.0f}s"))
    return out


def _queue_depth(conn: Connection, rule: AlertRule, _s: Settings, now: datetime) -> list[Observation]:
    threshold = float(rule.param("threshold"))
    return [Observation({"queue": q}, n, n > threshold, threshold=threshold,
                        summary=f"queue {q}: {n} jobs due (threshold {threshold:.0f})")
            for q, (n, _) in _waiting_by_queue(conn, now, rule.param("queue")).items()]


def _dead_letter_growth(conn: Connection, rule: AlertRule, _s: Settings, now: datetime) -> list[Observation]:
    dl = t.dead_letters
    window, threshold = float(rule.param("window_seconds")), float(rule.param("threshold"))
    by_class = rule.param("by") == "error_class"
    query = (sa.select(dl.c.error_class, sa.func.count())
             .where(dl.c.resolved_at.is_(None), dl.c.created_at >= now - timedelta(seconds=window))
             .group_by(dl.c.error_class))
    counts: dict[str, int] = {}
    for error_class, n in conn.execute(query):
        key = (error_class or "internal") if by_class else ""
        counts[key] = counts.get(key, 0) + n
    return [Observation({"error_class": k} if k else {}, n, n > threshold, threshold=threshold,
                        summary=f"{n} jobs dead-lettered in {window:.0f}s" + (f" ({k})" if k else ""))
            for k, n in counts.items()]


def _no_live_worker(conn: Connection, rule: AlertRule, settings: Settings, now: datetime) -> list[Observation]:
    waiting = _waiting_by_queue(conn, now, rule.param("queue"))
    if not waiting:
        return []
    paused = {name for name, p in conn.execute(sa.select(t.queues.c.name, t.queues.c.paused)) if p}
    served, serves_all = _live_pools(conn, now, settings)
    out = []
    for queue, (n, _) in waiting.items():
        if queue in paused:
            continue
        stopped = not serves_all and queue not in served
        out.append(Observation({"queue": queue}, n, stopped, threshold=0,
                               summary=f"{n} jobs wait in queue {queue} and no live worker serves it"))
    return out


def _live_pools(conn: Connection, now: datetime, settings: Settings) -> tuple[set[str], bool]:
    w = t.workers
    pools: set[str] = set()
    serves_all = False
    for (raw,) in conn.execute(sa.select(w.c.pools).where(liveness.alive_clause(now, settings.lease_seconds))):
        parsed = parse_pools_column(raw)
        serves_all = serves_all or not parsed  # a worker without pools claims from every queue
        pools.update(parsed)
    return pools, serves_all


def _breaker_open(conn: Connection, rule: AlertRule, _s: Settings, _now: datetime) -> list[Observation]:
    cb = t.circuit_breakers
    query = sa.select(cb.c.action, cb.c.state, cb.c.failure_count, cb.c.last_error).where(cb.c.state != "closed")
    if rule.param("action"):
        query = query.where(cb.c.action == rule.param("action"))
    return [Observation({"action": action}, float(failures or 0), True, threshold=None,
                        summary=f"circuit breaker of {action} is {state}" + (f": {err}" if err else ""))
            for action, state, failures, err in conn.execute(query)]


def _review_wait(conn: Connection, rule: AlertRule, _s: Settings, now: datetime) -> list[Observation]:
    threshold = float(rule.param("threshold_seconds"))
    count, oldest = review_backlog(conn, rule.tenant_id)
    if not count:
        return []
    wait = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
    return [Observation({"queue": REVIEW_QUEUE}, wait, wait > threshold, threshold=threshold,
                        summary=f"{count} jobs wait in review; the oldest for {wait:.0f}s — route them and add a "
                                "routing rule")]


_OBSERVERS = {"error_rate": _error_rate, "queue_wait": _queue_wait, "queue_depth": _queue_depth,
              "dead_letter_growth": _dead_letter_growth, "no_live_worker": _no_live_worker,
              "breaker_open": _breaker_open, "review_wait": _review_wait}


# --------------------------------------------------------------------------- state machine
def apply_rule(conn: Connection, rule: AlertRule, observations: list[Observation], now: datetime) -> list[Transition]:
    """Advance the rule's alert instances given its observations (inside the evaluation transaction)."""
    a = t.alerts
    open_rows = {r["label_key"]: dict(r) for r in conn.execute(
        sa.select(a).where(a.c.rule_name == rule.name, a.c.state.in_(("pending", "firing")))).mappings()}
    changes: list[Transition] = []
    active = {o.key: o for o in observations if o.active}
    for key, obs in active.items():
        row = open_rows.get(key)
        if row is None:
            row = _open_pending(conn, rule, obs, now)
            changes.append(Transition(rule.name, rule.severity, "pending", obs.labels, row["id"]))
        if row["state"] == "pending" and (now - row["pending_since"]).total_seconds() >= rule.for_seconds:
            changes.append(_fire(conn, rule, obs, row, now))
        else:
            conn.execute(a.update().where(a.c.id == row["id"]).values(value=obs.value, summary=obs.summary,
                                                                       updated_at=now))
    readings = {o.key: o for o in observations}
    for key, row in open_rows.items():
        if key not in active:
            changes.append(_clear(conn, rule, row, readings.get(key), now))
    return changes


def _open_pending(conn: Connection, rule: AlertRule, obs: Observation, now: datetime) -> dict[str, Any]:
    a = t.alerts
    values = {"rule_name": rule.name, "labels": obs.labels, "label_key": obs.key, "severity": rule.severity,
              "state": "pending", "value": obs.value, "summary": obs.summary, "pending_since": now,
              "updated_at": now}
    alert_id = conn.execute(a.insert().values(**values).returning(a.c.id)).scalar_one()
    return {**values, "id": alert_id}


def _fire(conn: Connection, rule: AlertRule, obs: Observation, row: dict[str, Any], now: datetime) -> Transition:
    a = t.alerts
    conn.execute(a.update().where(a.c.id == row["id"]).values(state="firing", fired_at=now, value=obs.value,
                                                               summary=obs.summary, updated_at=now))
    data = _event_data(rule, row, state="firing", value=obs.value, summary=obs.summary, threshold=obs.threshold,
                       fired_at=now, resolved_at=None)
    event_id = outbox.add_event(conn, event_type="alert.firing", tenant_id=rule.tenant_id or "default",
                                payload=data, subject=f"[FIRING {rule.severity}] {rule.name}", message=obs.summary)
    return Transition(rule.name, rule.severity, "firing", obs.labels, row["id"], event_id)


def _clear(conn: Connection, rule: AlertRule, row: dict[str, Any], obs: Observation | None,
           now: datetime) -> Transition:
    a = t.alerts
    labels = row["labels"] or {}
    if row["state"] == "pending":  # never fired: nobody was told, so there is nothing to resolve
        conn.execute(a.delete().where(a.c.id == row["id"]))
        return Transition(rule.name, rule.severity, "cleared", labels, row["id"])
    summary = obs.summary if obs else f"{rule.name}: condition no longer holds"
    value = obs.value if obs else None
    conn.execute(a.update().where(a.c.id == row["id"]).values(state="resolved", resolved_at=now, value=value,
                                                               updated_at=now))
    data = _event_data(rule, row, state="resolved", value=value, summary=summary,
                       threshold=obs.threshold if obs else None, fired_at=row["fired_at"], resolved_at=now)
    event_id = outbox.add_event(conn, event_type="alert.resolved", tenant_id=rule.tenant_id or "default",
                                payload=data, subject=f"[RESOLVED] {rule.name}", message=summary)
    return Transition(rule.name, rule.severity, "resolved", labels, row["id"], event_id)


def _event_data(rule: AlertRule, row: dict[str, Any], *, state: str, value: float | None, summary: str,
                threshold: float | None, fired_at: datetime | None, resolved_at: datetime | None) -> dict[str, Any]:
    return {"alert_id": row["id"], "rule": rule.name, "kind": rule.kind, "severity": rule.severity,
            "state": state, "labels": row["labels"] or {}, "value": value, "threshold": threshold,
            "summary": summary, "runbook": rule.runbook or None, "fired_at": iso(fired_at),
            "resolved_at": iso(resolved_at)}


# --------------------------------------------------------------------------- evaluator
class Alerter:
    """Evaluates every rule against the database; one round per :meth:`evaluate_once`."""

    def __init__(self, *, engine: Engine, settings: Settings, rules: list[AlertRule] | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self._fixed_rules = rules

    def rules(self, conn: Connection) -> list[AlertRule]:
        """The rules in force (re-read each round, so database edits apply without a restart)."""
        return self._fixed_rules if self._fixed_rules is not None else load_rules(self.settings, conn)

    def evaluate_once(self, now: datetime | None = None) -> list[Transition]:
        """Observe every rule and advance its alerts, in one transaction; returns what changed."""
        from mediamill.observability import metrics

        moment = now or utcnow()
        with self.engine.begin() as conn:
            if not _take_lock(conn):
                return []
            changes: list[Transition] = []
            for rule in self.rules(conn):
                changes += apply_rule(conn, rule, observe(conn, rule, self.settings, moment), moment)
        for change in changes:
            if change.state in ("pending", "firing", "resolved"):
                metrics.alert_transition(change.rule, change.severity, change.state)
        return changes


def _take_lock(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return True  # the SQLite transaction began IMMEDIATE: evaluators already take turns
    return bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_LOCK_KEY))).scalar())


def list_alerts(conn: Connection, *, state: str | None = None, limit: int = 100,
                rules: set[str] | None = None) -> list[dict[str, Any]]:
    """Alerts, newest first (``state``: pending | firing | resolved | active = pending or firing;
    ``rules``: only alerts of these rule names)."""
    a = t.alerts
    query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
    if rules is not None:
        query = query.where(a.c.rule_name.in_(sorted(rules)))
    if state == "active":
        query = query.where(a.c.state.in_(("pending", "firing")))
    elif state:
        query = query.where(a.c.state == state)
    return [alert_view(dict(r)) for r in conn.execute(query).mappings()]


def rules_for(settings: Settings, conn: Connection, tenant_id: str | None) -> list[AlertRule]:
    """The rules a tenant sees: its own. Install-wide rules watch every tenant's figures, so they
    are for the tenant that runs the install (``tenant_id`` None: every rule)."""
    rules = load_rules(settings, conn)
    return rules if tenant_id is None else [r for r in rules if r.tenant_id == tenant_id]


def alerts_for(settings: Settings, conn: Connection, tenant_id: str | None, *, state: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
    """Alerts of the rules ``tenant_id`` sees (None: all), newest first, each with its runbook."""
    rules = rules_for(settings, conn, tenant_id)
    names = None if tenant_id is None else {r.name for r in rules}
    runbooks = {r.name: r.runbook for r in rules}
    return [{**a, "runbook": runbooks.get(a["rule"])}
            for a in list_alerts(conn, state=state, limit=limit, rules=names)]


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    """An alert row for the API and CLI."""
    return {"id": row["id"], "rule": row["rule_name"], "severity": row["severity"], "state": row["state"],
            "labels": row["labels"] or {}, "value": row["value"], "summary": row["summary"],
            "pending_since": iso(row["pending_since"]), "fired_at": iso(row["fired_at"]),
            "resolved_at": iso(row["resolved_at"])}
