"""Alert rules: what to watch, how long it must last (``for``), how bad it is, what to do about it.

Rules come from four places, later ones replacing earlier ones of the same name: the built-in
defaults (``alert_default_rules``), a TOML file (``alert_rules_file``, ``[[rules]]`` tables),
a JSON list in ``MEDIAMILL_ALERT_RULES_JSON``, and the ``alert_rules`` table. Example::

    [[rules]]
    name = "video-errors"
    kind = "error_rate"
    severity = "P2"
    for = "5m"
    params = { window_seconds = 300, threshold = 0.02, min_samples = 20, by = "error_class" }
    runbook = "Check the dead-letter queue grouped by error class …"
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mediamill.config import Settings
from mediamill.errors import ConfigError
from mediamill.store import alerts_repo
from mediamill.store.db import Connection

RuleKind = Literal["error_rate", "queue_wait", "queue_depth", "dead_letter_growth", "no_live_worker",
                   "breaker_open", "review_wait"]
Severity = Literal["P1", "P2", "P3"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}

#: Parameters each kind understands, with their defaults.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "error_rate": {"window_seconds": 300, "threshold": 0.02, "min_samples": 20, "by": None, "workflow": None},
    "queue_wait": {"threshold_seconds": 900, "queue": None},
    "queue_depth": {"threshold": 1000, "queue": None},
    "dead_letter_growth": {"window_seconds": 900, "threshold": 10, "by": None},
    "no_live_worker": {"queue": None},
    "breaker_open": {"action": None},
    "review_wait": {"threshold_seconds": 3600},
}


def parse_duration(value: Any) -> float:
    """``300``, ``"5s"``, ``"5m"``, ``"1h"`` → seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration like 30s, 5m or 1h, got {value!r}")
    return float(match.group(1)) * _UNIT[match.group(2)]


class AlertRule(BaseModel):
    """One rule. ``for_seconds`` is how long the condition must hold before the alert fires."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=200)
    kind: RuleKind
    severity: Severity = "P2"
    for_seconds: float = Field(default=300.0, alias="for", ge=0)
    params: dict[str, Any] = Field(default_factory=dict)
    runbook: str = ""
    enabled: bool = True
    tenant_id: str | None = None

    @field_validator("for_seconds", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    def param(self, key: str) -> Any:
        """A parameter, or the kind's default."""
        return self.params.get(key, DEFAULT_PARAMS[self.kind].get(key))


DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"name": "pipeline-stopped", "kind": "no_live_worker", "severity": "P1", "for": "1m",
     "runbook": "Work is waiting and no live worker serves its queue. Check `mediamill workers` / the Workers "
                "page: are worker processes running and heartbeating? Look at their logs for crashes or "
                "database errors, restart them, and make sure a pool covers the queue (`--pool QUEUE=N`). "
                "A paused queue does not raise this alert."},
    {"name": "high-error-rate", "kind": "error_rate", "severity": "P2", "for": "5m",
     "params": {"window_seconds": 300, "threshold": 0.02, "min_samples": 20, "by": "error_class"},
     "runbook": "More than 2% of finished jobs failed over 5 minutes, for this error class. Open the dead-letter "
                "queue filtered by the class: invalid_input means bad uploads (check the source), transient/"
                "unavailable means a dependency (storage, external service) is failing, timeout/resource means "
                "limits are too tight or inputs too large. Fix the cause, then bulk-retry the dead letters."},
    {"name": "queue-wait-high", "kind": "queue_wait", "severity": "P2", "for": "5m",
     "params": {"threshold_seconds": 900},
     "runbook": "The oldest due job in this queue has waited more than 15 minutes. Compare queue depth with worker "
                "slots: add workers or pool concurrency for the queue, check for an open circuit breaker "
                "holding jobs, or a paused queue."},
    {"name": "dead-letters-growing", "kind": "dead_letter_growth", "severity": "P3", "for": "0s",
     "params": {"window_seconds": 900, "threshold": 10, "by": "error_class"},
     "runbook": "More than 10 jobs were dead-lettered in 15 minutes. Triage the dead-letter queue by error class; "
                "retry those whose cause is fixed, discard corrupt inputs."},
    {"name": "breaker-open", "kind": "breaker_open", "severity": "P2", "for": "1m",
     "runbook": "A step's circuit breaker is open: jobs needing this action wait instead of failing. Read the "
                "breaker's last error (Breakers page), fix the dependency (tool missing, service down), then let "
                "the half-open probe close it or reset the breaker."},
    {"name": "review-waiting-too-long", "kind": "review_wait", "severity": "P3", "for": "0s",
     "params": {"threshold_seconds": 3600},
     "runbook": "A job submitted without a workflow has waited in review for more than an hour: routing found no "
                "rule and several (or no) workflows for its type. Route it from its job page or with "
                "`mediamill route JOB WORKFLOW`, and add a routing rule (`mediamill routes add`) so the next ones "
                "go straight through."},
)


def load_rules(settings: Settings, conn: Connection | None = None) -> list[AlertRule]:
    """Every enabled rule from defaults, file, environment and database (later sources win by name)."""
    by_name: dict[str, AlertRule] = {}
    sources: list[tuple[str, list[dict[str, Any]]]] = []
    if settings.alert_default_rules:
        sources.append(("built-in rules", [dict(r) for r in DEFAULT_RULES]))
    if settings.alert_rules_file:
        sources.append((settings.alert_rules_file, _rules_from_file(Path(settings.alert_rules_file))))
    if settings.alert_rules_json:
        sources.append(("MEDIAMILL_ALERT_RULES_JSON", _rules_from_json(settings.alert_rules_json)))
    if conn is not None:
        sources.append(("alert_rules table", rules_from_table(conn)))
    for origin, items in sources:
        for rule in parse_rules(items, origin=origin):
            by_name[rule.name] = rule
    return [r for r in by_name.values() if r.enabled]


def parse_rules(items: list[dict[str, Any]], *, origin: str) -> list[AlertRule]:
    """Validate rule dicts; a bad one raises ConfigError naming its origin, index and field."""
    rules = []
    for i, item in enumerate(items):
        try:
            rule = AlertRule.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{origin}: rule #{i + 1} ({item.get('name', '?')}): {where}: {first['msg']}") from None
        unknown = set(rule.params) - set(DEFAULT_PARAMS[rule.kind])
        if unknown:
            raise ConfigError(f"{origin}: rule {rule.name}: unknown params {sorted(unknown)} for kind {rule.kind}; "
                              f"expected {sorted(DEFAULT_PARAMS[rule.kind])}")
        rules.append(rule)
    return rules


def _rules_from_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"alert rules file {path}: {exc}") from exc
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise ConfigError(f"alert rules file {path}: expected [[rules]] tables")
    return rules


def _rules_from_json(text: str) -> list[dict[str, Any]]:
    try:
        rules = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"MEDIAMILL_ALERT_RULES_JSON: {exc}") from exc
    if not isinstance(rules, list):
        raise ConfigError("MEDIAMILL_ALERT_RULES_JSON: expected a JSON list of rules")
    return rules


def rules_from_table(conn: Connection) -> list[dict[str, Any]]:
    """Rules stored in the ``alert_rules`` table, as dicts."""
    rows = alerts_repo.rule_rows(conn)
    return [{"name": r["name"], "kind": r["kind"], "severity": r["severity"] or "P2",
             "for": r["for_seconds"] if r["for_seconds"] is not None else 300, "params": r["params"] or {},
             "runbook": r["runbook"] or "", "enabled": bool(r["enabled"]), "tenant_id": r["tenant_id"]}
            for r in rows]
