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

from mediamill.config import Settings
from mediamill.notify.alert_rules import AlertRule, load_rules
from mediamill.observability.dbgauges import parse_pools_column
from mediamill.store import alerts_repo as repo
from mediamill.store import liveness, outbox
from mediamill.store.db import Connection, Engine
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
    total, failed = repo.finished_since(conn, now - timedelta(seconds=window), rule.param("workflow"))
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


def _queue_wait(conn: Connection, rule: AlertRule, _s: Settings, now: datetime) -> list[Observation]:
    threshold = float(rule.param("threshold_seconds"))
    out = []
    for queue, (n, oldest) in repo.waiting_by_queue(conn, now, rule.param("queue")).items():
        wait = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
        out.append(Observation({"queue": queue}, wait, wait > threshold, threshold=threshold,
                               summary=f"queue {queue}: oldest of {n} due jobs has waited {wait:.0f}s"))
    return out


def _queue_depth(conn: Connection, rule: AlertRule, _s: Settings, now: datetime) -> list[Observation]:
    threshold = float(rule.param("threshold"))
    return [Observation({"queue": q}, n, n > threshold, threshold=threshold,
                        summary=f"queue {q}: {n} jobs due (threshold {threshold:.0f})")
            for q, (n, _) in repo.waiting_by_queue(conn, now, rule.param("queue")).items()]


def _dead_letter_growth(conn: Connection, rule: AlertRule, _s: Settings, now: datetime) -> list[Observation]:
    window, threshold = float(rule.param("window_seconds")), float(rule.param("threshold"))
    by_class = rule.param("by") == "error_class"
    counts: dict[str, int] = {}
    for error_class, n in repo.dead_lettered_since(conn, now - timedelta(seconds=window)):
        key = (error_class or "internal") if by_class else ""
        counts[key] = counts.get(key, 0) + n
    return [Observation({"error_class": k} if k else {}, n, n > threshold, threshold=threshold,
                        summary=f"{n} jobs dead-lettered in {window:.0f}s" + (f" ({k})" if k else ""))
            for k, n in counts.items()]


def _no_live_worker(conn: Connection, rule: AlertRule, settings: Settings, now: datetime) -> list[Observation]:
    waiting = repo.waiting_by_queue(conn, now, rule.param("queue"))
    if not waiting:
        return []
    paused = repo.paused_queues(conn)
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
    pools: set[str] = set()
    serves_all = False
    for raw in liveness.live_worker_pools(conn, now, settings.lease_seconds):
        parsed = parse_pools_column(raw)
        serves_all = serves_all or not parsed  # a worker without pools claims from every queue
        pools.update(parsed)
    return pools, serves_all


def _breaker_open(conn: Connection, rule: AlertRule, _s: Settings, _now: datetime) -> list[Observation]:
    return [Observation({"action": action}, float(failures or 0), True, threshold=None,
                        summary=f"circuit breaker of {action} is {state}" + (f": {err}" if err else ""))
            for action, state, failures, err in repo.open_breakers(conn, rule.param("action") or None)]


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
    open_rows = {r["label_key"]: r for r in repo.open_alerts(conn, rule.name)}
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
            repo.update_alert(conn, row["id"], {"value": obs.value, "summary": obs.summary, "updated_at": now})
    readings = {o.key: o for o in observations}
    for key, row in open_rows.items():
        if key not in active:
            changes.append(_clear(conn, rule, row, readings.get(key), now))
    return changes


def _open_pending(conn: Connection, rule: AlertRule, obs: Observation, now: datetime) -> dict[str, Any]:
    values = {"rule_name": rule.name, "labels": obs.labels, "label_key": obs.key, "severity": rule.severity,
              "state": "pending", "value": obs.value, "summary": obs.summary, "pending_since": now,
              "updated_at": now}
    alert_id = repo.insert_alert(conn, values)
    return {**values, "id": alert_id}


def _fire(conn: Connection, rule: AlertRule, obs: Observation, row: dict[str, Any], now: datetime) -> Transition:
    repo.update_alert(conn, row["id"], {"state": "firing", "fired_at": now, "value": obs.value,
                                        "summary": obs.summary, "updated_at": now})
    data = _event_data(rule, row, state="firing", value=obs.value, summary=obs.summary, threshold=obs.threshold,
                       fired_at=now, resolved_at=None)
    event_id = outbox.add_event(conn, event_type="alert.firing", tenant_id=rule.tenant_id or "default",
                                payload=data, subject=f"[FIRING {rule.severity}] {rule.name}", message=obs.summary)
    return Transition(rule.name, rule.severity, "firing", obs.labels, row["id"], event_id)


def _clear(conn: Connection, rule: AlertRule, row: dict[str, Any], obs: Observation | None,
           now: datetime) -> Transition:
    labels = row["labels"] or {}
    if row["state"] == "pending":  # never fired: nobody was told, so there is nothing to resolve
        repo.delete_alert(conn, row["id"])
        return Transition(rule.name, rule.severity, "cleared", labels, row["id"])
    summary = obs.summary if obs else f"{rule.name}: condition no longer holds"
    value = obs.value if obs else None
    repo.update_alert(conn, row["id"], {"state": "resolved", "resolved_at": now, "value": value,
                                        "updated_at": now})
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
            if not repo.try_evaluation_lock(conn, _LOCK_KEY):
                return []
            changes: list[Transition] = []
            for rule in self.rules(conn):
                changes += apply_rule(conn, rule, observe(conn, rule, self.settings, moment), moment)
        for change in changes:
            if change.state in ("pending", "firing", "resolved"):
                metrics.alert_transition(change.rule, change.severity, change.state)
        return changes


def list_alerts(conn: Connection, *, state: str | None = None, limit: int = 100,
                rules: set[str] | None = None) -> list[dict[str, Any]]:
    """Alerts, newest first (``state``: pending | firing | resolved | active = pending or firing;
    ``rules``: only alerts of these rule names)."""
    return [alert_view(r) for r in repo.alert_rows(conn, state=state, limit=limit, rules=rules)]


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
