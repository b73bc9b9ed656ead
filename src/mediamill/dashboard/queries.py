"""The dashboard's shaping of what it reads (the reads themselves are
:mod:`mediamill.store.dashboard_queries`): charts' time buckets, a sampled window's series, a job's
step timeline and its decisions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from mediamill.statuses import SUCCEEDED_JOB
from mediamill.store.analytics import percentiles
from mediamill.store.dashboard_queries import Window
from mediamill.store.timeutil import utcnow

EPOCH = datetime(1970, 1, 1)


def sampled_series(rows: list[Any], w: Window, bucket: int) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """``finished_series`` and ``submitted_series`` estimated from a sample (counts scaled by its step)."""
    since = (w.since - EPOCH).total_seconds()
    groups: dict[int, dict[str, Any]] = {}
    submitted: dict[int, int] = {}
    for _wf, status, sub, started, done in rows:
        b = int(sub) // bucket * bucket
        submitted[b] = submitted.get(b, 0) + w.step
        if done is None or done < since:
            continue
        g = groups.setdefault(int(done) // bucket * bucket, {"finished": 0, "failed": 0, "_d": []})
        g["finished"] += w.step
        g["failed"] += w.step if status == "failed" else 0
        if status in SUCCEEDED_JOB and started is not None:
            g["_d"].append(done - started)
    series = [{"bucket": b, "finished": g["finished"], "failed": g["failed"],
               "p95": percentiles(g["_d"], (0.95,))["p95"]} for b, g in sorted(groups.items())]
    return series, submitted


def fill_buckets(series: list[dict[str, Any]], submitted: dict[int, int], *, since: datetime,
                 bucket: int) -> list[dict[str, Any]]:
    """One entry per bucket from ``since`` to now (empty buckets included, so charts keep their time axis)."""
    epoch = datetime(1970, 1, 1)
    first = int((since - epoch).total_seconds()) // bucket * bucket
    last = int((utcnow() - epoch).total_seconds()) // bucket * bucket
    by_bucket = {s["bucket"]: s for s in series}
    out = []
    for b in range(first, last + bucket, bucket):
        s = by_bucket.get(b, {})
        finished = s.get("finished", 0)
        out.append({"t": epoch + timedelta(seconds=b), "finished": finished, "failed": s.get("failed", 0),
                    "p95": s.get("p95"), "submitted": submitted.get(b, 0),
                    "error_rate": s.get("failed", 0) / finished if finished else None})
    return out


# ----------------------------------------------------------------------------- job detail
def timeline(job: dict[str, Any], definition_steps: list[Any]) -> list[dict[str, Any]]:
    """One row per step of the job's workflow version: its latest execution in the current run,
    attempts, duration, and the outputs it produced."""
    run = job.get("run_number") or 1
    by_name: dict[str, list[dict[str, Any]]] = {}
    for ex in job.get("steps", []):
        by_name.setdefault(ex.get("step_name") or "", []).append(ex)
    rows = []
    for i, step in enumerate(definition_steps):
        runs = by_name.get(step.name, [])
        current = [e for e in runs if (e.get("run_number") or 1) == run] or runs
        last = current[-1] if current else None
        rows.append({"index": i + 1, "name": step.name, "action": step.action, "when": step.when,
                     "on_failure": step.on_failure, "status": (last or {}).get("status") or "pending",
                     "attempts": len(current), "duration_ms": (last or {}).get("duration_ms"),
                     "started_at": (last or {}).get("started_at"), "error": (last or {}).get("error_message"),
                     "error_class": (last or {}).get("error_class"), "stderr": (last or {}).get("stderr_tail"),
                     "progress": (last or {}).get("progress_percent"), "history": runs})
    return rows


def decisions(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The routing and condition decisions of a job's event log."""
    out = []
    for e in job.get("events", []):
        data = e.get("data") or {}
        if isinstance(data, str):
            data = json.loads(data)
        if e.get("event_type") == "decision":
            out.append({"step": e.get("step_name"), "at": e.get("created_at"), **data})
        elif e.get("event_type") == "routing":  # each rule evaluated when the job was submitted
            out += [_routing_row(e, r) for r in data.get("evaluated") or []]
    return out


def _routing_row(event: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    return {"step": "routing", "at": event.get("created_at"), "rule": rule.get("condition"),
            "result": rule.get("result"), "error": rule.get("error") or rule.get("skipped"),
            "workflow": f"rule {rule.get('rule')} → {rule.get('workflow')}"}


def window_start(hours: float) -> datetime:
    return utcnow() - timedelta(hours=hours)
