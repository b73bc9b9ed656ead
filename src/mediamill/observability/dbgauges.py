"""Gauges whose truth is the database, computed at scrape time and cached for a few seconds.

The reads are :mod:`mediamill.store.gauges` — small tables and partial indexes only, never a scan
of the job history — so a scrape stays cheap with millions of jobs. Every queue of an active
workflow is exported even when idle: 0, rather than no series at all.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mediamill.store import gauges as reads
from mediamill.store import liveness
from mediamill.store.db import Connection, Engine
from mediamill.store.routing_repo import REVIEW_QUEUE, review_backlog
from mediamill.store.timeutil import utcnow

BREAKER_STATES = ("closed", "half_open", "open")
QUEUE_STATES = ("queued", "delayed", "processing")


class DbGaugeCollector(Collector):
    """A prometheus collector over the database; results are cached for ``cache_seconds``."""

    def __init__(self, engine: Engine, *, cache_seconds: Callable[[], float],
                 live_seconds: Callable[[], float]) -> None:
        self.engine = engine
        self._cache_seconds = cache_seconds
        self._live_seconds = live_seconds
        self._lock = threading.Lock()
        self._cached: list[GaugeMetricFamily] = []
        self._cached_at = -1e9

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._cached_at >= self._cache_seconds():
                self._cached = self._compute()
                self._cached_at = time.monotonic()
            families = list(self._cached)
        yield from families

    def _compute(self) -> list[GaugeMetricFamily]:
        up = GaugeMetricFamily("mediamill_db_up", "1 when the database answered the last scrape")
        try:
            with self.engine.connect() as conn:
                families = collect_db_gauges(conn, live_seconds=self._live_seconds())
        except Exception:  # a scrape must not fail because the database is away; say so instead
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]


def collect_db_gauges(conn: Connection, *, live_seconds: float) -> list[GaugeMetricFamily]:
    """Compute every database gauge on one connection."""
    now = utcnow()
    return [
        *_queue_gauges(conn, now),
        _paused_gauge(conn),
        _breaker_gauge(conn),
        *_worker_gauges(conn, now, live_seconds),
        _dead_letter_gauge(conn),
        _pending_notifications_gauge(conn),
        _alerts_gauge(conn),
        *_source_gauges(conn, now),
    ]


def _queue_gauges(conn: Connection, now: datetime) -> list[GaugeMetricFamily]:
    """Depth by state and oldest wait of every queue that has entries or serves an active workflow.

    An idle queue exports 0 for each state, not nothing: a stat panel then shows 0, not "No data".
    """
    counts = reads.queue_depths(conn, now)
    in_review, review_since = review_backlog(conn)
    if in_review:  # jobs waiting for a person to route them are not in media_queue
        counts[(REVIEW_QUEUE, "queued")] = in_review
    queues = active_queues(conn) | {q for q, _ in counts}
    depth = GaugeMetricFamily("mediamill_queue_depth", "Entries in a queue by state (queued = due now)",
                              labels=["queue", "state"])
    for queue in sorted(queues):
        for st in QUEUE_STATES:
            depth.add_metric([queue, st], counts.get((queue, st), 0))
    wait = GaugeMetricFamily("mediamill_queue_oldest_wait_seconds",
                             "Seconds the oldest due entry of a queue has waited", labels=["queue"])
    # Wait counts from when an entry became due: a retry in back-off is not "waiting" yet.
    waited = {q: max((now - ts).total_seconds(), 0.0) for q, ts in reads.oldest_due(conn, now).items()}
    if in_review and review_since is not None:
        waited[REVIEW_QUEUE] = max((now - review_since).total_seconds(), 0.0)
    for queue in sorted(queues | set(waited)):
        wait.add_metric([queue], waited.get(queue, 0.0))
    return [depth, wait]


def active_queues(conn: Connection) -> set[str]:
    """The queues of the active workflows (a small table)."""
    return reads.active_queues(conn)


def _paused_gauge(conn: Connection) -> GaugeMetricFamily:
    g = GaugeMetricFamily("mediamill_queue_paused", "1 when a queue is paused", labels=["queue"])
    paused = reads.queue_paused(conn)
    for name in sorted(active_queues(conn) | set(paused)):
        g.add_metric([name], 1 if paused.get(name) else 0)
    return g


def _breaker_gauge(conn: Connection) -> GaugeMetricFamily:
    g = GaugeMetricFamily("mediamill_breaker_state", "1 for the current state of each action's breaker",
                          labels=["action", "state"])
    for action, state in reads.breaker_states(conn):
        for candidate in BREAKER_STATES:
            g.add_metric([action, candidate], 1 if state == candidate else 0)
    return g


def _worker_gauges(conn: Connection, now: datetime, live_seconds: float) -> list[GaugeMetricFamily]:
    rows = liveness.live_worker_pools(conn, now, live_seconds)
    live = GaugeMetricFamily("mediamill_workers_live", "Workers with a recent heartbeat serving a pool",
                             labels=["pool"])
    slots = GaugeMetricFamily("mediamill_worker_slots", "Concurrent step slots of live workers per pool",
                              labels=["pool"])
    per_pool: dict[str, list[int]] = {}
    for pools in rows:
        for pool, concurrency in parse_pools_column(pools).items():
            entry = per_pool.setdefault(pool, [0, 0])
            entry[0] += 1
            entry[1] += concurrency
    for pool, (count, total) in sorted(per_pool.items()):
        live.add_metric([pool], count)
        slots.add_metric([pool], total)
    total_live = GaugeMetricFamily("mediamill_workers_live_all", "Workers with a recent heartbeat, any pool")
    total_live.add_metric([], len(rows))
    return [live, slots, total_live]


def parse_pools_column(value: Any) -> dict[str, int]:
    """``workers.pools`` as {pool: concurrency}; accepts a dict, a list, or "a=1,b=2" text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [p for p in value.split(",") if p.strip()]
    if isinstance(value, dict):
        return {str(k): _int(v) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, int] = {}
        for item in value:
            name, _, n = str(item).partition("=")
            out[name.strip()] = _int(n or 1)
        return out
    return {}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _dead_letter_gauge(conn: Connection) -> GaugeMetricFamily:
    g = GaugeMetricFamily("mediamill_dead_letters_open", "Unresolved dead letters by error class",
                          labels=["error_class"])
    for error_class, n in reads.open_dead_letters(conn):
        g.add_metric([error_class or "internal"], n)
    return g


def _pending_notifications_gauge(conn: Connection) -> GaugeMetricFamily:
    n = reads.pending_notifications(conn)
    g = GaugeMetricFamily("mediamill_notifications_pending", "Outbox rows waiting for delivery")
    g.add_metric([], n)
    return g


def _alerts_gauge(conn: Connection) -> GaugeMetricFamily:
    g = GaugeMetricFamily("mediamill_alerts_firing", "Alerts currently firing", labels=["rule", "severity"])
    for rule, severity, n in reads.firing_alerts(conn):
        g.add_metric([rule, severity or "P3"], n)
    return g



def _source_gauges(conn: Connection, now: datetime) -> list[GaugeMetricFamily]:
    """Per source: files waiting to be taken, and the lag — how long the oldest of them has waited."""
    lag = GaugeMetricFamily("mediamill_source_lag_seconds", "Age of the oldest file a source has seen but not yet "
                            "turned into a job (0 when it is caught up)", labels=["source"])
    waiting = GaugeMetricFamily("mediamill_source_files_waiting", "Files a source has seen but not yet taken",
                                labels=["source"])
    held = GaugeMetricFamily("mediamill_source_backpressure", "1 while a source waits for its queue to drain",
                             labels=["source"])
    for name, reason, n, oldest in reads.source_backlogs(conn):
        lag.add_metric([name], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        waiting.add_metric([name], n)
        held.add_metric([name], 1 if reason else 0)
    return [lag, waiting, held]
