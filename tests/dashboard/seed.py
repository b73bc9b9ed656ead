"""A few thousand realistic jobs written straight into the tables (steps, events, queue entries,
dead letters, deliveries): what the dashboard's server-time tests render."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from mediamill.runtime import Runtime
from mediamill.store.tables import (
    dead_letters,
    job_events,
    media_queue,
    step_executions,
    workflow_definitions,
    workflow_jobs,
    workflow_notifications,
    workflow_steps,
)
from mediamill.store.timeutil import utcnow

FINISHED = ("completed",) * 90 + ("failed",) * 5 + ("partial", "cancelled")
LIVE = ("queued",) * 8 + ("processing", "pending")
ERRORS = ("invalid_input", "transient", "timeout", "tool_failed")


def _workflows(rt: Runtime) -> list[dict[str, Any]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(sa.select(workflow_definitions.c.id, workflow_definitions.c.queue_name,
                                      workflow_definitions.c.workflow_code,
                                      workflow_definitions.c.current_version)).mappings().all()
        steps = conn.execute(sa.select(workflow_steps.c.id, workflow_steps.c.workflow_id, workflow_steps.c.version,
                                       workflow_steps.c.step_name, workflow_steps.c.action)
                             .order_by(workflow_steps.c.step_number)).mappings().all()
    out = []
    for r in rows:
        mine = [s for s in steps if s["workflow_id"] == r["id"] and s["version"] == (r["current_version"] or 1)]
        out.append({**dict(r), "steps": mine})
    return [w for w in out if w["steps"]]


def _job(i: int, n: int, wf: dict[str, Any], rng: random.Random, *, first: int, live: bool) -> dict[str, Any]:
    now = utcnow()
    submitted = now - timedelta(days=2) * (1 - (i - first) / n) - timedelta(minutes=5)
    late = live and i - first > n - n // 20 and rng.random() < 0.5
    status = rng.choice(LIVE) if late else rng.choice(FINISHED)
    started = submitted + timedelta(seconds=rng.random() * 20) if status not in ("queued", "pending") else None
    ended = started + timedelta(seconds=1 + rng.random() ** 2 * 120) if started and status != "processing" else None
    # as the engine writes them: completed_at only when it completed, finished_at on every terminal state
    completed = ended if status in ("completed", "partial") else None
    return {"id": i, "job_code": f"JOB-{submitted:%Y%m%d}-{i:08X}", "workflow_id": wf["id"], "workflow_version":
            wf["current_version"] or 1, "queue_name": wf["queue_name"], "priority": rng.randint(1, 10),
            "status": status, "submitted_at": submitted, "started_at": started, "completed_at": completed,
            "finished_at": ended,
            "progress_percent": 100 if status == "completed" else 40, "tenant_id": "default",
            "submitted_by": "seed", "error_class": rng.choice(ERRORS) if status == "failed" else None,
            "error_message": "seeded failure" if status == "failed" else None, "input_filename": f"file-{i}.mp4"}


def _steps(job: dict[str, Any], wf: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    if job["finished_at"] is None:
        return []
    out = []
    for k, s in enumerate(wf["steps"][:3]):
        ms = rng.randint(50, 5000)
        failed = job["status"] == "failed" and k == min(2, len(wf["steps"]) - 1)
        out.append({"job_id": job["id"], "step_id": s["id"], "status": "failed" if failed else "completed",
                    "started_at": job["started_at"], "completed_at": job["finished_at"], "duration_ms": ms,
                    "duration_seconds": ms // 1000, "action": s["action"], "step_name": s["step_name"],
                    "error_class": job["error_class"] if failed else None})
    return out


def seed(rt: Runtime, n: int = 3000, *, first: int = 1, live: bool = True, seed_value: int = 7) -> None:
    """Write ``n`` jobs (ids ``first``…) of the last two days with their executions, events, queue
    entries and dead letters; ``live=False`` writes finished jobs only (nothing for a worker to claim)."""
    rng = random.Random(seed_value)
    wfs = _workflows(rt)
    jobs = [_job(i, n, wfs[i % len(wfs)], rng, first=first, live=live) for i in range(first, first + n)]
    by_wf = {w["id"]: w for w in wfs}
    steps = [s for j in jobs for s in _steps(j, by_wf[j["workflow_id"]], rng)]
    events = [{"job_id": j["id"], "tenant_id": "default", "event_type": "status", "data": {"status": j["status"]},
               "created_at": j["finished_at"] or j["submitted_at"]} for j in jobs]
    queue = [{"job_id": j["id"], "queue_name": j["queue_name"], "priority": j["priority"], "status": j["status"],
              "scheduled_time": j["submitted_at"], "created_at": j["submitted_at"]}
             for j in jobs if j["status"] in ("queued", "processing")]
    codes = {w["id"]: w["workflow_code"] for w in wfs}
    dead = [{"job_id": j["id"], "tenant_id": "default", "workflow_code": codes[j["workflow_id"]],
             "workflow_version": j["workflow_version"],
             "error_class": j["error_class"], "error_message": "seeded failure", "created_at": j["finished_at"]}
            for j in jobs if j["status"] == "failed"]
    sent = [{"job_id": j["id"], "tenant_id": "default", "channel": "webhook", "event_type": "job.completed",
             "status": "sent", "recipient": "https://example.com/hook", "created_at": j["finished_at"], "attempts": 1}
            for j in jobs[::10] if j["finished_at"]]
    with rt.engine.begin() as conn:
        for table, rows in ((workflow_jobs, jobs), (step_executions, steps), (job_events, events),
                            (media_queue, queue), (dead_letters, dead), (workflow_notifications, sent)):
            if rows:
                conn.execute(table.insert(), rows)
