"""Staged rollouts (canary) and shadow runs of a candidate workflow version, per tenant.

* **canary** — a share of new jobs runs the candidate instead of the active version. Which jobs is
  decided by a hash of the rollout and the job id, so it is deterministic and spread evenly. An
  optional guard aborts the rollout by itself when the candidate's failure rate exceeds the active
  version's by a margin over a minimum sample (an event and a ``rollout.aborted`` notification).
  ``promote`` activates the candidate; ``abort`` stops sending jobs to it.
* **shadow** — a share of new jobs is also run on the candidate as a separate job (``shadow_of`` =
  the primary) at the lowest priority. See ``mediamill.engine.shadow`` for what a shadow job may not do
  and for the comparison report.

Jobs submitted with an explicit ``version`` (or routed by a rule that pins one) are never diverted.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mediamill.errors import Conflict, InvalidInput, NotFound
from mediamill.statuses import TERMINAL_JOB
from mediamill.store import outbox, rollouts_repo, workflow_repo
from mediamill.store.db import Connection, Engine
from mediamill.store.rollouts_repo import guarded_canaries, latest, live, live_for
from mediamill.store.timeutil import iso

__all__ = ["DEFAULT_GUARD", "FIGURE_ROWS", "KINDS", "Guard", "bucket", "check_all_guards", "check_guards", "figures",
           "guarded_canaries", "latest", "live_for", "picked", "promote", "public", "start", "status", "stop",
           "version_figures"]

KINDS = ("canary", "shadow")
DEFAULT_GUARD = {"max_failure_delta": 0.10, "min_jobs": 20}
FIGURE_ROWS = 20_000  # the most recent jobs a rollout's figures are computed from


@dataclass(frozen=True)
class Guard:
    """Abort when candidate failure rate − active failure rate > ``max_failure_delta`` once the candidate
    has ``min_jobs`` finished jobs."""

    max_failure_delta: float
    min_jobs: int

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> Guard | None:
        if not raw:
            return None
        merged = {**DEFAULT_GUARD, **raw}
        delta, minimum = float(merged["max_failure_delta"]), int(merged["min_jobs"])
        if not 0 <= delta <= 1 or minimum < 1:
            raise InvalidInput("guard: max_failure_delta must be within 0..1 and min_jobs at least 1")
        return cls(delta, minimum)


def bucket(rollout_id: int, job_id: int) -> float:
    """A stable number in [0, 100) for this job under this rollout."""
    digest = hashlib.sha256(f"{rollout_id}:{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100.0


def picked(rollout: dict[str, Any], job_id: int) -> bool:
    """Does this rollout take this job (its share, decided by the job id)?"""
    return bucket(rollout["id"], job_id) < float(rollout["percent"])


# ------------------------------------------------------------------------------ reads
def public(row: dict[str, Any]) -> dict[str, Any]:
    """A rollout as the API shows it."""
    return {"id": row["id"], "kind": row["kind"], "version": row["version"], "base_version": row["base_version"],
            "percent": row["percent"], "guard": row["guard"], "state": row["state"], "created_by": row["created_by"],
            "started_at": iso(row["started_at"]), "ended_at": iso(row["ended_at"]), "end_reason": row["end_reason"]}


# ------------------------------------------------------------------------------ figures
def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 3)


def version_figures(rows: Sequence[Any]) -> dict[str, Any]:
    """jobs, finished, failed, failure rate, failures by class, p50/p95 duration of one version's jobs."""
    finished = [r for r in rows if r.status in TERMINAL_JOB and r.status != "cancelled"]
    failed = [r for r in finished if r.status == "failed"]
    durations = [(r.completed_at - r.started_at).total_seconds() for r in finished
                 if r.completed_at is not None and r.started_at is not None]
    by_class: dict[str, int] = {}
    for r in failed:
        by_class[r.error_class or "internal"] = by_class.get(r.error_class or "internal", 0) + 1
    return {"jobs": len(rows), "finished": len(finished), "failed": len(failed),
            "partial": sum(1 for r in finished if r.status == "partial"),
            "failure_rate": round(len(failed) / len(finished), 4) if finished else None,
            "failures_by_class": by_class, "p50_seconds": _pct(durations, 50), "p95_seconds": _pct(durations, 95)}


def figures(conn: Connection, rollout: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Live figures per version of the primary jobs submitted since the rollout started."""
    rows = rollouts_repo.primary_jobs(conn, rollout, limit=FIGURE_ROWS)
    by_version: dict[int, list[Any]] = {}
    for r in rows:
        by_version.setdefault(r.workflow_version or 1, []).append(r)
    return {str(v): version_figures(rs) for v, rs in sorted(by_version.items())}


# ------------------------------------------------------------------------------ changes
def _workflow(conn: Connection, code: str) -> workflow_repo.VersionedWorkflow:
    return workflow_repo.get_workflow(conn, code)


def start(engine: Engine, code: str, *, kind: str, version: int, percent: float, tenant_id: str,
          by: str | None, guard: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start (or change the share of) a canary or shadow run of ``version``."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    if not 0 < percent <= 100:
        raise InvalidInput(f"percent must be within (0, 100], got {percent}")
    parsed = Guard.parse(guard) if kind == "canary" else None
    with engine.begin() as conn:
        wf = _workflow(conn, code)
        workflow_repo.get_workflow(conn, code, version)  # NotFound when it does not exist
        if version == wf.current_version:
            raise Conflict(f"version {version} is already the active version of {code}")
        current = live(conn, wf.workflow_id, tenant_id, kind)
        if current is not None and current["version"] == version:
            rollouts_repo.set_share(conn, current["id"], percent=percent, guard=asdict(parsed) if parsed else None)
            row_id = current["id"]
        else:
            if current is not None:
                _end(conn, current, "replaced", f"replaced by version {version}", by)
            row_id = rollouts_repo.insert(conn, tenant_id=tenant_id, workflow_id=wf.workflow_id, kind=kind,
                                          version=version, base_version=wf.current_version, percent=percent,
                                          guard=asdict(parsed) if parsed else None, by=by)
        _log(conn, tenant_id, {"rollout": row_id, "kind": kind, "workflow": code, "version": version,
                               "percent": percent, "state": "active", "by": by})
        return public(rollouts_repo.get(conn, row_id))


def _end(conn: Connection, rollout: dict[str, Any], state: str, reason: str, by: str | None) -> bool:
    return rollouts_repo.end(conn, rollout["id"], state=state, reason=f"{reason} ({by})" if by else reason)


def _log(conn: Connection, tenant_id: str, data: dict[str, Any]) -> None:
    rollouts_repo.log_event(conn, tenant_id, data)


def _live_or_404(conn: Connection, code: str, tenant_id: str, kind: str) -> tuple[dict[str, Any], int]:
    wf = _workflow(conn, code)
    row = live(conn, wf.workflow_id, tenant_id, kind)
    if row is None:
        raise NotFound(f"{code} has no active {'rollout' if kind == 'canary' else 'shadow run'}")
    return row, wf.workflow_id


def stop(engine: Engine, code: str, *, kind: str, tenant_id: str, by: str | None,
         reason: str = "stopped by request") -> dict[str, Any]:
    """Abort a canary / stop a shadow run: new jobs go to the active version only."""
    with engine.begin() as conn:
        row, _wid = _live_or_404(conn, code, tenant_id, kind)
        _end(conn, row, "aborted" if kind == "canary" else "stopped", reason, by)
        _log(conn, tenant_id, {"rollout": row["id"], "kind": kind, "workflow": code, "state": "ended",
                               "reason": reason, "by": by})
        return public(rollouts_repo.get(conn, row["id"]))


def promote(engine: Engine, code: str, *, kind: str, tenant_id: str, by: str | None) -> dict[str, Any]:
    """Activate the candidate version (for every new job) and end the rollout or shadow run."""
    with engine.begin() as conn:
        row, _wid = _live_or_404(conn, code, tenant_id, kind)
        workflow_repo.activate_version(conn, code, row["version"])
        _end(conn, row, "promoted", f"version {row['version']} activated", by)
        _log(conn, tenant_id, {"rollout": row["id"], "kind": kind, "workflow": code, "version": row["version"],
                               "state": "promoted", "by": by})
        outbox.add_event(conn, event_type="rollout.promoted", tenant_id=tenant_id,
                         payload={"workflow_code": code, "version": row["version"], "kind": kind, "by": by},
                         subject=f"{code} v{row['version']} promoted",
                         message=f"Version {row['version']} of {code} is now active ({kind} promoted by {by}).")
        return public(rollouts_repo.get(conn, row["id"]))


def status(engine: Engine, code: str, *, kind: str, tenant_id: str) -> dict[str, Any]:
    """The active (else the last) rollout of a workflow with its per-version live figures."""
    with engine.connect() as conn:
        wf = _workflow(conn, code)
        row = latest(conn, wf.workflow_id, tenant_id, kind)
        if row is None:
            return {"workflow": code, "active_version": wf.current_version, "rollout": None, "figures": {}}
        return {"workflow": code, "active_version": wf.current_version, "rollout": public(row),
                "figures": figures(conn, row)}


# ------------------------------------------------------------------------------ the guard
def check_guards(engine: Engine, workflow_id: int, tenant_id: str) -> dict[str, Any] | None:
    """Abort the workflow's canary when its guard trips; returns the aborted rollout, if any."""
    with engine.begin() as conn:
        row = live(conn, workflow_id, tenant_id, "canary")
        guard = Guard.parse(row["guard"]) if row else None
        if row is None or guard is None:
            return None
        figs = figures(conn, row)
        cand, base = figs.get(str(row["version"])), figs.get(str(row["base_version"]))
        reason = _tripped(guard, cand, base)
        if reason is None or not _end(conn, row, "aborted", reason, "guard"):
            return None
        code, _ = workflow_repo.workflow_facts(conn, workflow_id)
        data = {"rollout": row["id"], "kind": "canary", "workflow": code, "version": row["version"],
                "state": "aborted", "reason": reason, "by": "guard"}
        _log(conn, tenant_id, data)
        outbox.add_event(conn, event_type="rollout.aborted", tenant_id=tenant_id,
                         payload={"workflow_code": code, "version": row["version"], "reason": reason,
                                  "candidate": cand, "active": base},
                         subject=f"Rollout of {code} v{row['version']} aborted",
                         message=f"The canary of {code} v{row['version']} was aborted by its guard: {reason}.")
        return data


def _tripped(guard: Guard, cand: dict[str, Any] | None, base: dict[str, Any] | None) -> str | None:
    if cand is None or cand["finished"] < guard.min_jobs:
        return None
    base_rate = (base or {}).get("failure_rate") or 0.0
    delta = cand["failure_rate"] - base_rate
    if delta <= guard.max_failure_delta:
        return None
    return (f"candidate failure rate {cand['failure_rate']:.1%} over {cand['finished']} jobs exceeds the active "
            f"version's {base_rate:.1%} by more than {guard.max_failure_delta:.1%}")


def check_all_guards(engine: Engine, pairs: Sequence[tuple[int, str]] | None = None) -> list[dict[str, Any]]:
    """Check every guarded canary, each in a transaction of its own. ``pairs``: the (workflow id, tenant) of the
    guarded canaries when the caller already read them (a worker's heartbeat reads them in its own transaction
    with ``guarded_canaries``, and checks them once that is committed: on SQLite a second writer would wait)."""
    if pairs is None:
        with engine.connect() as conn:
            pairs = guarded_canaries(conn)
    return [hit for wid, tenant in pairs if (hit := check_guards(engine, wid, tenant)) is not None]

