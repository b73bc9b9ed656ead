"""Analytics: the four reference reports — job status, queue monitor, step performance, workflow
summary (their plain SQL is tests/fixtures/seed_001_queries.sql) — and the numbers an operator asks next
(p50/p95/p99 durations, error rate by class, throughput per time bucket).

:func:`summary` is the one source of the headline figures (jobs submitted and finished in a
window, by outcome, error rate, p95 duration): ``GET /v1/analytics/summary`` and the dashboard's
overview cards both read it, so they always agree. A job is *finished* when it reached any
terminal state (completed, partial, failed, cancelled): windows of finished jobs read
``finished_at``, because ``completed_at`` stays NULL on failed and cancelled jobs.

Differences from the reference SQL, each for a reason:

- *version-aware*: a workflow has ``workflow_steps`` rows per version, so the reference
  ``total_steps`` (all rows of the workflow) over-counts; here it counts the steps of the
  version the job runs. Step performance is per versioned step row (with its version).
- *bounded*: every report reads a time window (``since``, default the last 24 hours) through
  an index on ``submitted_at`` / ``finished_at``, or a partial index of the queue; the job
  list is per status through ``(status, priority)`` with a LIMIT. Nothing counts the whole
  jobs table, so the reports stay fast with millions of jobs.
- *tenant-scoped*, and shadow runs (``shadow_of``) are left out of the workflow figures.
- on SQLite the reference's ``EXTRACT(EPOCH FROM …)`` becomes ``julianday`` arithmetic.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.statuses import SUCCEEDED_JOB, TERMINAL_JOB
from mediamill.store.timeutil import utcnow

_ACTION = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")  # safe to inline as a SQL literal
ACTIVE = ("processing", "queued", "pending")
STATUS_ORDER = ("failed", "processing", "queued", "pending", "partial", "completed", "cancelled")
DEFAULT_WINDOW = timedelta(hours=24)
SAMPLE_LIMIT = 50_000  # durations read for percentiles on SQLite (the newest of the window)
BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}
SUMMARY_WINDOWS = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 86400}
# plain strings: the SQL below quotes them with repr()
FINISHED = tuple(str(s) for s in TERMINAL_JOB)
SUCCEEDED = tuple(str(s) for s in SUCCEEDED_JOB)
P95_EXACT_LIMIT = 40_000  # successful jobs in a window above which PostgreSQL estimates their p95 from a sample
P95_SAMPLE_TARGET = 5_000  # rows such a sample aims at


def window_start(since: datetime | None) -> datetime:
    return since or utcnow() - DEFAULT_WINDOW


def _pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _seconds(conn: Connection, end: str, start: str) -> str:
    """SQL for ``end - start`` in seconds on this dialect."""
    if _pg(conn):
        return f"EXTRACT(EPOCH FROM ({end} - {start}))"
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


def _epoch(conn: Connection, col: str) -> str:
    return f"EXTRACT(EPOCH FROM {col})" if _pg(conn) else f"CAST(strftime('%s', {col}) AS INTEGER)"


def _jobs_by(conn: Connection, column: str) -> str:
    """``workflow_jobs`` read through the index on ``column`` (a time window).

    SQLite's planner otherwise likes to walk the (status, priority) index to save the
    GROUP BY sort, which reads every job instead of the window's.
    """
    return f"workflow_jobs INDEXED BY ix_workflow_jobs_{column}" if not _pg(conn) else "workflow_jobs"


def _actions_in(conn: Connection, alias: str) -> str:
    """``alias.action IN (…every action a step uses…)``: with it the (action, completed_at) index
    serves a time window over step_executions instead of a scan of the whole table."""
    actions = [a for a in conn.execute(sa.text("SELECT DISTINCT action FROM workflow_steps")).scalars()
               if a and _ACTION.match(a)]
    listed = f"{alias}.action IN ({', '.join(repr(str(a)) for a in actions)}) OR " if actions else ""
    # rows written by plain SQL (by another tool) carry no action
    return f"({listed}{alias}.action IS NULL)"


def _rows(conn: Connection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [_plain(dict(r)) for r in conn.execute(sa.text(sql), params).mappings()]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Decimals → floats, datetimes → ISO strings (JSON-ready)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat() + "Z"
        elif v is not None and not isinstance(v, int | float | str | bool):
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                out[k] = str(v)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------------------------ step 12
_JOB_STATUS_SQL = """
SELECT wj.id, wj.job_code, wd.workflow_code, wd.workflow_name, wj.workflow_version, wj.status,
       wj.current_step,
       (SELECT COUNT(*) FROM workflow_steps ws WHERE ws.workflow_id = wj.workflow_id
          AND ws.version = COALESCE(wj.workflow_version, 1)) AS total_steps,
       wj.progress_percent, wj.priority, wj.submitted_by, wj.submitted_at, wj.started_at, wj.completed_at,
       wj.finished_at, wj.error_class, wj.error_message
FROM workflow_jobs wj JOIN workflow_definitions wd ON wj.workflow_id = wd.id
WHERE wj.status = :status AND wj.tenant_id = :tenant AND wj.shadow_of IS NULL {window}
ORDER BY {order}
LIMIT :limit
"""


def job_status(conn: Connection, *, tenant_id: str, since: datetime | None = None,
               limit: int = 100) -> dict[str, Any]:
    """Job status report: jobs ordered failed, processing, queued, pending, (partial), completed,
    (cancelled), then priority — read status by status so each read is an index range.

    Unfinished jobs are listed whatever their age, by priority (an index range on
    ``(status, priority)``). Of the finished ones — millions — the newest of the window are
    taken (newest first through ``(tenant_id, id)``, no sort of the window) and shown by priority.
    """
    start = window_start(since)
    jobs: list[dict[str, Any]] = []
    for status in STATUS_ORDER:
        if len(jobs) >= limit:
            break
        active = status in ACTIVE
        sql = _JOB_STATUS_SQL.format(window="" if active else "AND wj.submitted_at >= :since",
                                     order="wj.priority DESC, wj.id DESC" if active else "wj.id DESC")
        rows = _rows(conn, sql, {"status": status, "tenant": tenant_id, "since": start, "limit": limit - len(jobs)})
        jobs += rows if active else sorted(rows, key=lambda r: (-(r["priority"] or 0), -r["id"]))
    return {"since": start.isoformat() + "Z", "counts": status_counts(conn, tenant_id=tenant_id, since=start),
            "jobs": jobs}


def status_counts(conn: Connection, *, tenant_id: str, since: datetime) -> dict[str, int]:
    """Jobs per status submitted in the window (an index range on submitted_at)."""
    rows = conn.execute(sa.text(
        f"SELECT status, COUNT(*) AS n FROM {_jobs_by(conn, 'submitted_at')} WHERE submitted_at >= :since "
        "AND tenant_id = :t "
        "GROUP BY status"), {"since": since, "t": tenant_id}).all()
    return {str(s): int(n) for s, n in rows}


# ------------------------------------------------------------------------------ step 13
def queues(conn: Connection, *, tenant_id: str) -> list[dict[str, Any]]:
    """Queue monitor plus the oldest wait and whether the queue is paused.

    Reads only queued/processing entries, which partial indexes cover.
    """
    wait = _seconds(conn, ":now", "MIN(CASE WHEN mq.status = 'queued' THEN mq.created_at END)")
    # the live queue rows first, then their jobs by primary key: never a scan of the whole jobs table
    sql = f"""
    WITH live AS MATERIALIZED (
        SELECT queue_name, status, job_id, scheduled_time, created_at FROM media_queue
        WHERE status IN ('queued', 'processing'))
    SELECT mq.queue_name,
           COUNT(*) AS jobs_in_queue,
           COUNT(CASE WHEN mq.status = 'queued' THEN 1 END) AS waiting,
           COUNT(CASE WHEN mq.status = 'processing' THEN 1 END) AS processing,
           AVG(wj.priority) AS avg_priority,
           MIN(mq.scheduled_time) AS next_scheduled,
           {wait} AS oldest_wait_seconds,
           COALESCE(MAX(CASE WHEN q.paused THEN 1 ELSE 0 END), 0) AS paused
    FROM live mq
    INNER JOIN workflow_jobs wj ON mq.job_id = wj.id
    LEFT JOIN queues q ON q.name = mq.queue_name
    WHERE mq.status IN ('queued', 'processing') AND wj.tenant_id = :t
    GROUP BY mq.queue_name
    ORDER BY waiting DESC, mq.queue_name
    """
    rows = _rows(conn, sql, {"t": tenant_id, "now": utcnow()})
    for r in rows:
        r["paused"] = bool(r["paused"])
    return rows


# ------------------------------------------------------------------------------ step 14
def steps(conn: Connection, *, tenant_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Step performance per versioned step: executions finished in the window, avg/min/max duration,
    failures. Steps of old versions show only when they ran in the window."""
    sql = """
    SELECT ws.id AS step_id, wd.workflow_code, ws.version, ws.step_number, ws.step_name, ws.step_type, ws.action,
           COUNT(se.id) AS executions,
           AVG(se.duration_seconds) AS avg_duration_sec,
           MIN(se.duration_seconds) AS min_duration_sec,
           MAX(se.duration_seconds) AS max_duration_sec,
           COUNT(CASE WHEN se.status = 'failed' THEN 1 END) AS failures
    FROM workflow_steps ws
    JOIN workflow_definitions wd ON wd.id = ws.workflow_id
    LEFT JOIN (SELECT s.id, s.step_id, s.status, s.duration_seconds
               FROM step_executions s JOIN workflow_jobs j ON j.id = s.job_id
               WHERE {actions} AND s.completed_at >= :since AND j.tenant_id = :t) se ON se.step_id = ws.id
    WHERE (wd.tenant_id IS NULL OR wd.tenant_id = :t)
    GROUP BY ws.id, wd.workflow_code, ws.version, ws.step_number, ws.step_name, ws.step_type, ws.action,
             wd.current_version
    HAVING COUNT(se.id) > 0 OR ws.version = COALESCE(wd.current_version, 1)
    ORDER BY avg_duration_sec DESC {nulls}, wd.workflow_code, ws.step_number
    """.format(nulls="NULLS LAST" if _pg(conn) else "", actions=_actions_in(conn, "s"))
    if not _pg(conn):
        sql = sql.replace("ORDER BY avg_duration_sec DESC", "ORDER BY avg_duration_sec IS NULL, avg_duration_sec DESC")
    return _rows(conn, sql, {"since": window_start(since), "t": tenant_id})


# ------------------------------------------------------------------------------ step 15
def workflows(conn: Connection, *, tenant_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """Workflow summary over jobs submitted in the window (shadow runs excluded)."""
    minutes = _seconds(conn, "wj.completed_at", "wj.started_at") + " / 60"
    sql = f"""
    SELECT wd.workflow_code, wd.workflow_name, wd.workflow_type, wd.current_version,
           COUNT(wj.id) AS total_jobs,
           COUNT(CASE WHEN wj.status = 'completed' THEN 1 END) AS completed,
           COUNT(CASE WHEN wj.status = 'failed' THEN 1 END) AS failed,
           COUNT(CASE WHEN wj.status = 'partial' THEN 1 END) AS partial,
           COUNT(CASE WHEN wj.status = 'cancelled' THEN 1 END) AS cancelled,
           COUNT(CASE WHEN wj.status IN ('pending', 'queued', 'processing') THEN 1 END) AS in_progress,
           AVG(CASE WHEN wj.completed_at IS NOT NULL AND wj.started_at IS NOT NULL THEN {minutes} END)
               AS avg_duration_minutes
    FROM workflow_definitions wd
    LEFT JOIN workflow_jobs wj ON wd.id = wj.workflow_id AND wj.submitted_at >= :since
         AND wj.tenant_id = :t AND wj.shadow_of IS NULL
    WHERE wd.is_active = TRUE AND (wd.tenant_id IS NULL OR wd.tenant_id = :t)
    GROUP BY wd.id, wd.workflow_code, wd.workflow_name, wd.workflow_type, wd.current_version
    ORDER BY total_jobs DESC, wd.workflow_code
    """
    return _rows(conn, sql, {"since": window_start(since), "t": tenant_id})


# ------------------------------------------------------------------------------ summary
_FINISHED_IN_WINDOW = "finished_at >= :since AND tenant_id = :t AND shadow_of IS NULL"


def summary(conn: Connection, *, tenant_id: str, window_seconds: int,
            now: datetime | None = None) -> dict[str, Any]:
    """The headline figures of the last ``window_seconds`` (shadow runs left out).

    ``submitted``: jobs submitted in the window; ``finished``: jobs that reached a terminal state
    in it, split into ``completed``, ``partial``, ``failed`` and ``cancelled`` (they add up to
    ``finished``); ``error_rate`` = failed / finished (0.0 when nothing finished);
    ``p95_seconds``: the p95 run time (started → finished) of the jobs that succeeded (completed
    or partial) in seconds to the millisecond, None when none did — estimated from a sample when more than
    :data:`P95_EXACT_LIMIT` did (PostgreSQL). The counts are exact: index ranges on
    ``submitted_at`` and the covering ``finished_at`` index.
    """
    since = (now or utcnow()) - timedelta(seconds=window_seconds)
    params: dict[str, Any] = {"since": since, "t": tenant_id}
    counts, p95 = _finished_figures_pg(conn, params) if _pg(conn) else _finished_figures_sqlite(conn, params)
    finished = sum(counts.values())
    return {"window_seconds": window_seconds, "submitted": _submitted_count(conn, params), "finished": finished,
            **{status: counts.get(status, 0) for status in FINISHED},
            "error_rate": counts.get("failed", 0) / finished if finished else 0.0,
            # to the millisecond: SQLite's julianday arithmetic carries tens of microseconds of float noise
            "p95_seconds": None if p95 is None else round(p95, 3)}


def _submitted_count(conn: Connection, params: dict[str, Any]) -> int:
    sql = (f"SELECT COUNT(*) FROM {_jobs_by(conn, 'submitted_at')} "
           "WHERE submitted_at >= :since AND tenant_id = :t AND shadow_of IS NULL")
    return int(conn.execute(sa.text(sql), params).scalar_one())


def _finished_figures_pg(conn: Connection, params: dict[str, Any]) -> tuple[dict[str, int], float | None]:
    """Jobs finished per final status — exact, from the covering ``finished_at`` index — and the p95 run time
    of the successful ones: exact up to :data:`P95_EXACT_LIMIT` of them, above that estimated from a
    repeatable block sample of about :data:`P95_SAMPLE_TARGET` (a p95 does not need 200,000 rows sorted)."""
    counts = {str(status): int(n) for status, n in conn.execute(sa.text(
        f"SELECT status, COUNT(*) FROM workflow_jobs WHERE {_FINISHED_IN_WINDOW} AND status IN {FINISHED!r} "
        "GROUP BY status"), params)}
    succeeded = sum(counts.get(status, 0) for status in SUCCEEDED)
    if not succeeded:
        return counts, None
    sample = ""
    if succeeded > P95_EXACT_LIMIT:  # SYSTEM samples pages: p % of them hold about p % of the window's rows
        sample = f"TABLESAMPLE SYSTEM ({min(100.0, 100.0 * P95_SAMPLE_TARGET / succeeded):.6f}) REPEATABLE (7)"
    seconds = _seconds(conn, "finished_at", "started_at")
    value = conn.execute(sa.text(
        f"SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY {seconds}) FROM workflow_jobs {sample} "
        f"WHERE {_FINISHED_IN_WINDOW} AND status IN {SUCCEEDED!r} AND started_at IS NOT NULL"), params).scalar()
    return counts, float(value) if value is not None else None


def _finished_figures_sqlite(conn: Connection, params: dict[str, Any]) -> tuple[dict[str, int], float | None]:
    """Jobs finished per final status, and the p95 run time of the newest :data:`SAMPLE_LIMIT` successful ones."""
    jobs = _jobs_by(conn, "finished_at")
    counts = {str(status): int(n) for status, n in conn.execute(sa.text(
        f"SELECT status, COUNT(*) FROM {jobs} WHERE {_FINISHED_IN_WINDOW} AND status IN {FINISHED!r} "
        "GROUP BY status"), params)}
    seconds = _seconds(conn, "finished_at", "started_at")
    values = [float(v) for (v,) in conn.execute(sa.text(
        f"SELECT {seconds} FROM {jobs} WHERE {_FINISHED_IN_WINDOW} AND status IN {SUCCEEDED!r} "
        f"AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT {SAMPLE_LIMIT}"), params) if v is not None]
    return counts, percentiles(values, (0.95,))["p95"]


# ------------------------------------------------------------------------------ percentiles
def percentiles(values: list[float], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, float | None]:
    """Linear-interpolated percentiles (as PostgreSQL's percentile_cont)."""
    out: dict[str, float | None] = {}
    data = sorted(values)
    for q in qs:
        name = f"p{round(q * 100)}"
        if not data:
            out[name] = None
            continue
        pos = (len(data) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        out[name] = data[lo] + (data[hi] - data[lo]) * (pos - lo)
    return out


def _grouped_percentiles(conn: Connection, *, value_sql: str, group_sql: str, from_sql: str,
                         params: dict[str, Any], order_sql: str) -> list[dict[str, Any]]:
    if _pg(conn):
        sql = (f"SELECT {group_sql} AS name, COUNT(*) AS n, "
               f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {value_sql}) AS p50, "
               f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {value_sql}) AS p95, "
               f"percentile_cont(0.99) WITHIN GROUP (ORDER BY {value_sql}) AS p99, "
               f"AVG({value_sql}) AS avg {from_sql} GROUP BY {group_sql} ORDER BY {group_sql}")
        return _rows(conn, sql, params)
    sql = f"SELECT {group_sql} AS name, {value_sql} AS v {from_sql} ORDER BY {order_sql} DESC LIMIT {SAMPLE_LIMIT}"
    groups: dict[Any, list[float]] = {}
    for name, v in conn.execute(sa.text(sql), params).all():
        if v is not None:
            groups.setdefault(name, []).append(float(v))
    return [{"name": name, "n": len(vals), **percentiles(vals), "avg": sum(vals) / len(vals)}
            for name, vals in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def durations(conn: Connection, *, tenant_id: str, since: datetime | None = None) -> dict[str, Any]:
    """p50/p95/p99 of job durations (seconds, per workflow) and step durations (ms, per action)."""
    start = window_start(since)
    params: dict[str, Any] = {"since": start, "t": tenant_id}
    job_seconds = _seconds(conn, "wj.finished_at", "wj.started_at")
    jobs = _grouped_percentiles(
        conn, value_sql=job_seconds, group_sql="wd.workflow_code", params=params, order_sql="wj.finished_at",
        from_sql="FROM workflow_jobs wj JOIN workflow_definitions wd ON wd.id = wj.workflow_id "
                 "WHERE wj.finished_at >= :since AND wj.tenant_id = :t AND wj.started_at IS NOT NULL "
                 "AND wj.status IN ('completed', 'partial') AND wj.shadow_of IS NULL")
    step_ms = "COALESCE(se.duration_ms, se.duration_seconds * 1000)"
    steps_ = _grouped_percentiles(
        conn, value_sql=step_ms, group_sql="se.action", params=params, order_sql="se.completed_at",
        from_sql="FROM step_executions se JOIN workflow_jobs wj ON wj.id = se.job_id "
                 f"WHERE {_actions_in(conn, 'se')} AND se.completed_at >= :since AND wj.tenant_id = :t "
                 "AND se.status = 'completed'")
    return {"since": start.isoformat() + "Z", "jobs_seconds": jobs, "steps_ms": steps_}


# ------------------------------------------------------------------------------ errors
def error_rates(conn: Connection, *, tenant_id: str, since: datetime | None = None) -> dict[str, Any]:
    """Finished jobs in the window, failures by error class with their share, step failures by action."""
    start = window_start(since)
    params: dict[str, Any] = {"since": start, "t": tenant_id}
    finished = _rows(conn, f"SELECT status, error_class, COUNT(*) AS n FROM {_jobs_by(conn, 'finished_at')} "
                           "WHERE finished_at >= :since AND tenant_id = :t GROUP BY status, error_class", params)
    total = sum(r["n"] for r in finished)
    by_class: dict[str, int] = {}
    for r in finished:
        if r["status"] == "failed":
            key = r["error_class"] or "unknown"
            by_class[key] = by_class.get(key, 0) + r["n"]
    steps_ = _rows(conn, "SELECT se.action, se.error_class, COUNT(*) AS failures FROM step_executions se "
                         f"JOIN workflow_jobs wj ON wj.id = se.job_id WHERE {_actions_in(conn, 'se')} "
                         "AND se.completed_at >= :since "
                         "AND wj.tenant_id = :t AND se.status = 'failed' GROUP BY se.action, se.error_class "
                         "ORDER BY failures DESC", params)
    failed = sum(by_class.values())
    return {"since": start.isoformat() + "Z", "finished": total, "failed": failed,
            "error_rate": failed / total if total else 0.0,
            "by_class": [{"error_class": k, "count": v, "rate": v / total if total else 0.0}
                         for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])],
            "step_failures": steps_}


# ------------------------------------------------------------------------------ throughput
def bucket_seconds(bucket: str) -> int:
    """``1m`` / ``5m`` / ``15m`` / ``1h`` / ``6h`` / ``1d`` (or a number of seconds ≥ 10)."""
    if bucket in BUCKETS:
        return BUCKETS[bucket]
    if bucket.isascii() and bucket.isdigit() and int(bucket) >= 10:
        return int(bucket)
    raise ValueError(f"bucket must be one of {', '.join(BUCKETS)} or seconds >= 10, got {bucket!r}")


def throughput(conn: Connection, *, tenant_id: str, since: datetime | None = None,
               bucket: str = "1h") -> dict[str, Any]:
    """Jobs submitted and finished (by status) per time bucket."""
    size = bucket_seconds(bucket)
    start = window_start(since)
    params = {"since": start, "t": tenant_id, "b": size}
    sub_bucket = f"(({_epoch(conn, 'submitted_at')}) / :b) * :b" if not _pg(conn) else \
        f"FLOOR({_epoch(conn, 'submitted_at')} / :b) * :b"
    fin_bucket = sub_bucket.replace("submitted_at", "finished_at")
    submitted = _rows(conn, f"SELECT {sub_bucket} AS bucket, COUNT(*) AS n FROM {_jobs_by(conn, 'submitted_at')} "
                            f"WHERE submitted_at >= :since AND tenant_id = :t GROUP BY 1 ORDER BY 1", params)
    finished = _rows(conn, f"SELECT {fin_bucket} AS bucket, status, COUNT(*) AS n "
                           f"FROM {_jobs_by(conn, 'finished_at')} "
                           f"WHERE finished_at >= :since AND tenant_id = :t GROUP BY 1, 2 ORDER BY 1", params)
    buckets: dict[int, dict[str, Any]] = {}
    for r in submitted:
        _bucket(buckets, r["bucket"])["submitted"] = r["n"]
    for r in finished:
        b = _bucket(buckets, r["bucket"])
        b["finished"][r["status"]] = r["n"]
        b["finished_total"] += r["n"]
    rows = [buckets[k] for k in sorted(buckets)]
    for b in rows:
        b["per_second"] = b["finished_total"] / size
    return {"since": start.isoformat() + "Z", "bucket_seconds": size, "buckets": rows}


def _bucket(buckets: dict[int, dict[str, Any]], value: Any) -> dict[str, Any]:
    key = int(float(value))
    if key not in buckets:
        buckets[key] = {"start": (datetime(1970, 1, 1) + timedelta(seconds=key)).isoformat() + "Z",
                        "submitted": 0, "finished": {}, "finished_total": 0}
    return buckets[key]
