"""The dashboard's reads, shaped for a million jobs: every query is an index range, a bounded
window or a keyset page — never a ``count(*)`` over the whole jobs table (its size comes from
``pg_class.reltuples``). The SQLite and PostgreSQL forms of a query differ here and only here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mediamill.statuses import SUCCEEDED_JOB
from mediamill.store import analytics
from mediamill.store.analytics import STATUS_ORDER, percentiles
from mediamill.store.tables import (
    dead_letters,
    media_queue,
    step_executions,
    workflow_definitions,
    workflow_jobs,
    workflow_steps,
    workflow_versions,
)

wj, wd, dl, se, ws, wv = (workflow_jobs, workflow_definitions, dead_letters, step_executions, workflow_steps,
                          workflow_versions)
LIVE_STATUSES = ("processing", "queued", "pending")
SEARCH_WINDOW = 20_000  # a partial job-code search scans this many newest jobs
SAMPLE_LIMIT = 100_000  # rows read for percentiles on SQLite
SAMPLE_THRESHOLD = 40_000  # windows with more jobs than this are sampled (PostgreSQL)
SAMPLE_TARGET = 5_000  # jobs read from a sampled window
STEP_FIGURES = ("avg_duration_sec", "min_duration_sec", "max_duration_sec", "p50_ms", "p95_ms", "p99_ms")
JOB_COLUMNS = (wj.c.id, wj.c.job_code, wj.c.status, wj.c.priority, wj.c.progress_percent, wj.c.current_step,
               wj.c.queue_name, wj.c.submitted_by, wj.c.submitted_at, wj.c.started_at, wj.c.completed_at,
               wj.c.finished_at, wj.c.error_class, wj.c.error_message, wj.c.workflow_version, wj.c.input_filename,
               wj.c.workflow_id)


def is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def estimated_jobs(conn: Connection, tenant_id: str | None = None) -> int:
    """How many jobs there are, roughly: the planner's estimate on PostgreSQL, the top id on SQLite.
    A tenant's own jobs are counted exactly (the install-wide figure is the root admin's)."""
    if tenant_id is not None:
        return int(conn.execute(sa.select(sa.func.count()).where(wj.c.tenant_id == tenant_id)).scalar() or 0)
    if is_pg(conn):
        value = conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE relname = 'workflow_jobs'")).scalar()
        if value is not None and value >= 0:
            return int(value)
    return int(conn.execute(sa.select(sa.func.max(wj.c.id))).scalar() or 0)


def workflow_codes(conn: Connection, tenant_id: str) -> dict[int, str]:
    """id → code of the workflows the tenant can see (shared ones included)."""
    rows = conn.execute(sa.select(wd.c.id, wd.c.workflow_code)
                        .where(sa.or_(wd.c.tenant_id.is_(None), wd.c.tenant_id == tenant_id))
                        .order_by(wd.c.workflow_code))
    return {int(i): str(c) for i, c in rows}


# ----------------------------------------------------------------------------- jobs list
@dataclass(frozen=True)
class Cursor:
    """Where a page of the by-status ordering ends: (status rank, priority, id)."""

    rank: int
    priority: int
    id: int

    def __str__(self) -> str:
        return f"{self.rank}.{self.priority}.{self.id}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        parts = (text or "").split(".")
        if len(parts) != 3 or not all(p.lstrip("-").isascii() and p.lstrip("-").isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


@dataclass
class JobFilter:
    tenant_id: str
    status: str | None = None
    workflow_id: int | None = None
    queue: str | None = None
    search: str | None = None


def _priorities(conn: Connection, status: str, below: int | None) -> list[int]:
    """Distinct priorities of a status, highest first: a loose index scan on (status, priority)."""
    start = "AND priority <= :below" if below is not None else ""
    sql = f"""
    WITH RECURSIVE p(priority) AS (
      SELECT (SELECT priority FROM workflow_jobs WHERE status = :s AND priority IS NOT NULL {start}
              ORDER BY priority DESC LIMIT 1)
      UNION ALL
      SELECT (SELECT priority FROM workflow_jobs WHERE status = :s AND priority < p.priority
              ORDER BY priority DESC LIMIT 1) FROM p WHERE p.priority IS NOT NULL
    ) SELECT priority FROM p WHERE priority IS NOT NULL"""
    return [int(r[0]) for r in conn.execute(sa.text(sql), {"s": status, "below": below})]


def _filtered(f: JobFilter) -> Any:
    q = sa.select(*JOB_COLUMNS).where(wj.c.tenant_id == f.tenant_id, wj.c.shadow_of.is_(None))
    if f.workflow_id is not None:
        q = q.where(wj.c.workflow_id == f.workflow_id)
    if f.queue:
        q = q.where(wj.c.queue_name == f.queue)
    return q


def job_page(conn: Connection, f: JobFilter, after: Cursor | None, limit: int = 50
             ) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page by status — failed, processing, queued, pending, partial, completed, cancelled
    (the job status report's order), then priority (high first), then newest — read (status, priority) group by group,
    each an index range, so a page costs the same on page 1 and page 10,000."""
    if f.search:
        return search_jobs(conn, f, limit), None
    rows: list[dict[str, Any]] = []
    for rank, status in enumerate(STATUS_ORDER):
        if (f.status and status != f.status) or (after and rank < after.rank):
            continue
        resume = after if after and rank == after.rank else None
        for prio in _priorities(conn, status, resume.priority if resume else None):
            q = _filtered(f).where(wj.c.status == status, wj.c.priority == prio)
            if resume and prio == resume.priority:
                q = q.where(wj.c.id < resume.id)
            got = conn.execute(q.order_by(wj.c.id.desc()).limit(limit + 1 - len(rows))).mappings().all()
            rows += [{**dict(r), "_rank": rank} for r in got]
            if len(rows) > limit:
                last = rows[limit - 1]
                return rows[:limit], Cursor(last["_rank"], int(last["priority"]), int(last["id"]))
    return rows, None


def newest_page(conn: Connection, f: JobFilter, before: int | None, limit: int = 50
                ) -> tuple[list[dict[str, Any]], int | None]:
    """One page newest first (keyset on the id, through ``(tenant_id, id)``); returns the rows and the id
    the next page starts below (None on the last page)."""
    if f.search:
        return search_jobs(conn, f, limit), None
    q = _filtered(f)
    if f.status:
        q = q.where(wj.c.status == f.status)
    if before is not None:
        q = q.where(wj.c.id < before)
    rows = [dict(r) for r in conn.execute(q.order_by(wj.c.id.desc()).limit(limit + 1)).mappings()]
    return rows[:limit], (int(rows[limit - 1]["id"]) if len(rows) > limit else None)


def search_jobs(conn: Connection, f: JobFilter, limit: int) -> list[dict[str, Any]]:
    """A job id, an exact job code (unique index), or part of a code among the newest jobs."""
    term = (f.search or "").strip().upper()
    q = _filtered(f)
    if f.status:
        q = q.where(wj.c.status == f.status)
    as_id = int(term) if term.isascii() and term.isdigit() and len(term) < 16 else -1  # "²" is a digit to isdigit()
    exact = conn.execute(q.where(sa.or_(wj.c.job_code == term, wj.c.id == as_id))
                         ).mappings().all()
    if exact:
        return [dict(r) for r in exact]
    top = int(conn.execute(sa.select(sa.func.max(wj.c.id))).scalar() or 0)
    like = "%" + term.replace("%", "").replace("_", "") + "%"
    rows = conn.execute(q.where(wj.c.id > top - SEARCH_WINDOW, wj.c.job_code.like(like))
                        .order_by(wj.c.id.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def live_counts(conn: Connection, tenant_id: str) -> dict[str, int]:
    """Jobs waiting or running right now (an index range on status: small by nature)."""
    rows = conn.execute(sa.select(wj.c.status, sa.func.count()).where(wj.c.status.in_(LIVE_STATUSES),
                                                                       wj.c.tenant_id == tenant_id,
                                                                       wj.c.shadow_of.is_(None))
                        .group_by(wj.c.status)).all()
    return {str(s): int(n) for s, n in rows}


# ----------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Window:
    """The jobs submitted since ``since``: ids ``first``…``last``; ``step`` > 1 reads every step-th one."""

    since: datetime
    first: int = 0
    last: int = 0
    step: int = 1

    @property
    def sampled(self) -> bool:
        return self.step > 1


def window(conn: Connection, since: datetime) -> Window:
    """Exact below :data:`SAMPLE_THRESHOLD` jobs; above, a systematic sample of about
    :data:`SAMPLE_TARGET` jobs (ids grow with submission time, so the window is an id range)."""
    if not is_pg(conn):
        return Window(since)
    first = conn.execute(sa.select(wj.c.id).where(wj.c.submitted_at >= since).order_by(wj.c.submitted_at)
                         .limit(1)).scalar()
    last = conn.execute(sa.select(sa.func.max(wj.c.id))).scalar()
    if first is None or last is None or last - first + 1 <= SAMPLE_THRESHOLD:
        return Window(since)
    return Window(since, int(first), int(last), math.ceil((last - first + 1) / SAMPLE_TARGET))


def sampled_jobs(conn: Connection, w: Window, tenant_id: str) -> list[Any]:
    """Every ``w.step``-th job of the window — primary-key lookups, not a scan of the window — as
    (workflow id, status, submitted, started, finished) with times in epoch seconds."""
    sql = ("SELECT workflow_id, status, date_part('epoch', submitted_at), date_part('epoch', started_at), "
           "date_part('epoch', finished_at) FROM workflow_jobs "
           "WHERE id = ANY(ARRAY(SELECT generate_series(:a, :b, :k))) AND tenant_id = :t AND shadow_of IS NULL")
    return list(conn.execute(sa.text(sql), {"a": w.first, "b": w.last, "k": w.step, "t": tenant_id}))


# ----------------------------------------------------------------------------- overview
def _bucket_sql(conn: Connection, col: str) -> str:
    if is_pg(conn):  # date_part is double precision; EXTRACT is numeric (several times slower)
        return f"FLOOR(date_part('epoch', {col}) / :b) * :b"
    return f"(CAST(strftime('%s', {col}) AS INTEGER) / :b) * :b"


def _seconds_sql(conn: Connection, end: str, start: str) -> str:
    if is_pg(conn):
        return f"date_part('epoch', {end} - {start})"
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


def finished_series(conn: Connection, *, tenant_id: str, since: datetime, bucket: int) -> list[dict[str, Any]]:
    """Per time bucket: jobs finished (any terminal state), failed, and the p95 duration of successful ones (s)."""
    params = {"since": since, "t": tenant_id, "b": bucket}
    dur = _seconds_sql(conn, "finished_at", "started_at")
    ok = "status IN ('completed', 'partial') AND started_at IS NOT NULL"
    where = "finished_at >= :since AND tenant_id = :t AND shadow_of IS NULL"
    if is_pg(conn):
        sql = (f"SELECT {_bucket_sql(conn, 'finished_at')} AS bucket, COUNT(*) AS finished, "
               f"COUNT(CASE WHEN status = 'failed' THEN 1 END) AS failed, "
               f"percentile_cont(0.95) WITHIN GROUP (ORDER BY CASE WHEN {ok} THEN {dur} END) AS p95 "
               f"FROM workflow_jobs WHERE {where} GROUP BY 1 ORDER BY 1")
        return [{"bucket": int(float(r[0])), "finished": int(r[1]), "failed": int(r[2]),
                 "p95": float(r[3]) if r[3] is not None else None} for r in conn.execute(sa.text(sql), params)]
    sql = (f"SELECT {_bucket_sql(conn, 'finished_at')} AS bucket, status, CASE WHEN {ok} THEN {dur} END "
           f"FROM workflow_jobs WHERE {where} LIMIT {SAMPLE_LIMIT}")
    groups: dict[int, dict[str, Any]] = {}
    for b, status, seconds in conn.execute(sa.text(sql), params):
        g = groups.setdefault(int(b), {"bucket": int(b), "finished": 0, "failed": 0, "_d": []})
        g["finished"] += 1
        g["failed"] += status == "failed"
        if seconds is not None:
            g["_d"].append(float(seconds))
    for g in groups.values():
        g["p95"] = percentiles(g.pop("_d"), (0.95,))["p95"]
    return [groups[k] for k in sorted(groups)]


def submitted_series(conn: Connection, *, tenant_id: str, since: datetime, bucket: int) -> dict[int, int]:
    sql = (f"SELECT {_bucket_sql(conn, 'submitted_at')} AS bucket, COUNT(*) FROM workflow_jobs "
           f"WHERE submitted_at >= :since AND tenant_id = :t AND shadow_of IS NULL GROUP BY 1")
    return {int(float(b)): int(n) for b, n in conn.execute(sa.text(sql), {"since": since, "t": tenant_id,
                                                                             "b": bucket})}


def recent_failures(conn: Connection, tenant_id: str, limit: int = 6) -> list[dict[str, Any]]:
    q = (sa.select(wj.c.id, wj.c.job_code, wj.c.error_class, wj.c.error_message, wj.c.finished_at, wj.c.priority)
         .where(wj.c.status == "failed", wj.c.tenant_id == tenant_id, wj.c.shadow_of.is_(None))
         .order_by(wj.c.id.desc()).limit(limit))
    return [dict(r) for r in conn.execute(q).mappings()]


def queue_extras(conn: Connection, tenant_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Average (effective) priority and next scheduled time per queue, from the live queue rows only
    (joining 1M jobs for the reference report's AVG(wj.priority) costs a scan of the jobs table); a tenant's
    own jobs only when ``tenant_id`` is given."""
    query = sa.select(media_queue.c.queue_name, sa.func.avg(media_queue.c.priority),
                      sa.func.min(media_queue.c.scheduled_time)).select_from(media_queue)
    if tenant_id is not None:  # the tenant's own jobs only
        query = query.join(wj, wj.c.id == media_queue.c.job_id).where(wj.c.tenant_id == tenant_id)
    rows = conn.execute(query.where(media_queue.c.status.in_(("queued", "processing")))
                        .group_by(media_queue.c.queue_name))
    return {str(n): {"avg_priority": float(a) if a is not None else None, "next_scheduled": t} for n, a, t in rows}


# ----------------------------------------------------------------------------- step performance
def step_report(conn: Connection, *, tenant_id: str, since: datetime) -> list[dict[str, Any]]:
    """The step performance report (executions, avg/min/max seconds, failures per versioned step) plus p50/p95/p99 (ms).

    Executions are found through ``(action, completed_at)``: one index range per known action.
    """
    stats = _step_stats(conn, tenant_id=tenant_id, since=since)
    steps = conn.execute(
        sa.select(ws.c.id, ws.c.step_name, ws.c.step_type, ws.c.action, ws.c.version, ws.c.step_number,
                  wd.c.workflow_code, wd.c.current_version)
        .select_from(ws.join(wd, wd.c.id == ws.c.workflow_id))
        .where(sa.or_(wd.c.tenant_id.is_(None), wd.c.tenant_id == tenant_id))).mappings().all()
    out = []
    for s in steps:
        st = stats.get(int(s["id"]))
        if st is None and s["version"] != (s["current_version"] or 1):
            continue
        out.append({**dict(s), **dict.fromkeys(STEP_FIGURES), "executions": 0, "failures": 0, **(st or {})})
    out.sort(key=lambda r: (r.get("avg_duration_sec") is None, -(r.get("avg_duration_sec") or 0),
                            r["workflow_code"], r["step_number"] or 0))
    return out


def _step_where(conn: Connection) -> tuple[str, dict[str, Any]]:
    actions = [a for (a,) in conn.execute(sa.select(ws.c.action).distinct()) if a]
    names = {f"a{i}": a for i, a in enumerate(actions)}
    listed = ", ".join(f":{n}" for n in names) or "NULL"
    return (f"(se.action IN ({listed}) OR se.action IS NULL) AND se.completed_at >= :since "
            f"AND wj.tenant_id = :t AND wj.shadow_of IS NULL", names)


def _step_stats(conn: Connection, *, tenant_id: str, since: datetime) -> dict[int, dict[str, Any]]:
    where, names = _step_where(conn)
    params = {"since": since, "t": tenant_id, **names}
    ms = "COALESCE(se.duration_ms, se.duration_seconds * 1000)"
    base = "FROM step_executions se JOIN workflow_jobs wj ON wj.id = se.job_id WHERE " + where
    if is_pg(conn):
        sql = (f"SELECT se.step_id, COUNT(*) AS executions, AVG(se.duration_seconds) AS avg_duration_sec, "
               f"MIN(se.duration_seconds) AS min_duration_sec, MAX(se.duration_seconds) AS max_duration_sec, "
               f"COUNT(CASE WHEN se.status = 'failed' THEN 1 END) AS failures, "
               f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {ms}) AS p50_ms, "
               f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {ms}) AS p95_ms, "
               f"percentile_cont(0.99) WITHIN GROUP (ORDER BY {ms}) AS p99_ms {base} GROUP BY se.step_id")
        return {int(r["step_id"]): _floats(dict(r)) for r in conn.execute(sa.text(sql), params).mappings()}
    sql = f"SELECT se.step_id, se.status, se.duration_seconds, {ms} AS ms {base} LIMIT {SAMPLE_LIMIT}"
    groups: dict[int, list[Any]] = {}
    for r in conn.execute(sa.text(sql), params):
        groups.setdefault(int(r[0]), []).append(r)
    return {sid: _sqlite_step_stats(rows) for sid, rows in groups.items()}


def _sqlite_step_stats(rows: list[Any]) -> dict[str, Any]:
    secs = [float(r[2]) for r in rows if r[2] is not None]
    pct = percentiles([float(r[3]) for r in rows if r[3] is not None])
    return {"executions": len(rows), "failures": sum(r[1] == "failed" for r in rows),
            "avg_duration_sec": sum(secs) / len(secs) if secs else None,
            "min_duration_sec": min(secs) if secs else None, "max_duration_sec": max(secs) if secs else None,
            "p50_ms": pct["p50"], "p95_ms": pct["p95"], "p99_ms": pct["p99"]}


def _floats(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if v is not None and not isinstance(v, int | str) else v) for k, v in row.items()}


# ----------------------------------------------------------------------------- workflows
def workflow_report(conn: Connection, *, tenant_id: str, since: datetime) -> list[dict[str, Any]]:
    """The workflow summary report over the window plus p50/p95/p99 job durations (s) per workflow (estimated from
    a sample when the window is large)."""
    w = window(conn, since)
    if w.sampled:
        return sampled_workflow_report(conn, w, tenant_id)
    rows = analytics.workflows(conn, tenant_id=tenant_id, since=since)
    pct = _workflow_percentiles(conn, tenant_id=tenant_id, since=since)
    return [{**r, **pct.get(r["workflow_code"], dict.fromkeys(("p50", "p95", "p99")))} for r in rows]


def _workflow_percentiles(conn: Connection, *, tenant_id: str, since: datetime) -> dict[str, dict[str, Any]]:
    """p50/p95/p99 of successful jobs' durations (s) per workflow code, finished in the window."""
    dur = _seconds_sql(conn, "wj.finished_at", "wj.started_at")
    base = ("FROM workflow_jobs wj JOIN workflow_definitions wd ON wd.id = wj.workflow_id "
            "WHERE wj.finished_at >= :since AND wj.tenant_id = :t AND wj.status IN ('completed', 'partial') "
            "AND wj.started_at IS NOT NULL AND wj.shadow_of IS NULL")
    params = {"since": since, "t": tenant_id}
    if is_pg(conn):
        sql = (f"SELECT wd.workflow_code, percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {dur}) "
               f"{base} GROUP BY wd.workflow_code")
        return {code: dict(zip(("p50", "p95", "p99"), values or (None,) * 3, strict=True))
                for code, values in conn.execute(sa.text(sql), params)}
    groups: dict[str, list[float]] = {}
    for code, v in conn.execute(sa.text(f"SELECT wd.workflow_code, {dur} {base} LIMIT {SAMPLE_LIMIT}"), params):
        if v is not None:
            groups.setdefault(code, []).append(float(v))
    return {code: percentiles(values) for code, values in groups.items()}


def sampled_workflow_report(conn: Connection, w: Window, tenant_id: str) -> list[dict[str, Any]]:
    heads = conn.execute(sa.select(wd.c.id, wd.c.workflow_code, wd.c.workflow_name, wd.c.workflow_type,
                                   wd.c.current_version)
                         .where(wd.c.is_active.is_(True), sa.or_(wd.c.tenant_id.is_(None),
                                                                  wd.c.tenant_id == tenant_id))).mappings().all()
    by_wf: dict[int, list[Any]] = {}
    for row in sampled_jobs(conn, w, tenant_id):
        by_wf.setdefault(row[0], []).append(row)
    out = [{**dict(h), **_workflow_figures(by_wf.get(h["id"], []), w.step), "sampled_step": w.step} for h in heads]
    return sorted(out, key=lambda r: (-r["total_jobs"], r["workflow_code"]))


def _workflow_figures(rows: list[Any], step: int) -> dict[str, Any]:
    def n(*statuses: str) -> int:
        return step * sum(r[1] in statuses for r in rows)

    minutes = [(r[4] - r[3]) / 60 for r in rows if r[3] is not None and r[4] is not None]
    ok = [r[4] - r[3] for r in rows if r[1] in SUCCEEDED_JOB and r[3] is not None and r[4] is not None]
    return {"total_jobs": step * len(rows), "completed": n("completed"), "failed": n("failed"),
            "partial": n("partial"), "cancelled": n("cancelled"), "in_progress": n("pending", "queued", "processing"),
            "avg_duration_minutes": sum(minutes) / len(minutes) if minutes else None, **percentiles(ok)}


# ----------------------------------------------------------------------------- dead letters
def dead_letter_groups(conn: Connection, tenant_id: str) -> list[dict[str, Any]]:
    """Open dead letters per (error class, workflow): the triage view (partial index on open rows)."""
    q = (sa.select(dl.c.error_class, dl.c.workflow_code, sa.func.count().label("count"),
                   sa.func.min(dl.c.created_at).label("first"), sa.func.max(dl.c.created_at).label("last"),
                   sa.func.max(dl.c.workflow_version).label("version"))
         .where(dl.c.resolved_at.is_(None), dl.c.tenant_id == tenant_id)
         .group_by(dl.c.error_class, dl.c.workflow_code).order_by(sa.func.count().desc()))
    return [{**dict(r), "error_class": r["error_class"] or "unknown"} for r in conn.execute(q).mappings()]


def versions_of(conn: Connection, codes: set[str]) -> dict[str, list[int]]:
    """Every version number of each workflow code (for "retry on version …")."""
    if not codes:
        return {}
    rows = conn.execute(sa.select(wd.c.workflow_code, wv.c.version).select_from(
        wv.join(wd, wd.c.id == wv.c.workflow_id)).where(wd.c.workflow_code.in_(codes)).order_by(wv.c.version))
    out: dict[str, list[int]] = {}
    for code, version in rows:
        out.setdefault(code, []).append(int(version))
    return out
