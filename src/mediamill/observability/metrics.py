"""Prometheus metrics: event counters and histograms, plus gauges read from the database at scrape time.

Two kinds of series, two mechanisms:

* **Events** (submissions, completions, step outcomes, deliveries, HTTP requests) are counters
  and histograms recorded by whichever process sees the event. Several processes (API, workers,
  notifier) share one directory of memory-mapped files — prometheus_client's multiprocess mode —
  so one scrape of any API process sums them all.
* **State** (queue depth and wait, breakers, live workers, open dead letters, firing alerts) is
  the database's truth, so it is computed by a collector at scrape time with small indexed
  queries, cached for a few seconds, never a full table scan.

Importing this module creates nothing: metric objects are built on first use, after
:func:`configure_metrics` (called by :func:`mediamill.observability.logging.configure`) has had
a chance to switch on multiprocess mode. The public helpers are plain functions the engine calls.
"""

from __future__ import annotations

import bisect
import collections
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keep the import cheap: prometheus_client and SQLAlchemy load on first use
    from prometheus_client.registry import CollectorRegistry

    from mediamill.config import Settings
    from mediamill.store.db import Engine

__all__ = [
    "alert_transition",
    "auth_failure",
    "breaker_transition",
    "configure_metrics",
    "ensure_configured",
    "http_request",
    "install_telemetry_handlers",
    "job_dead_lettered",
    "job_finished",
    "job_rescued",
    "job_submitted",
    "metrics_dir",
    "notification_delivered",
    "render",
    "reset_for_tests",
    "source_file",
    "step_finished",
    "step_retried",
]

JOB_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class _Metrics:
    """The event metrics of this process (built once, lazily)."""

    registry: CollectorRegistry
    jobs_submitted: Any
    jobs_finished: Any
    job_duration: Any
    steps_finished: Any
    step_failures: Any
    step_duration: Any
    step_retries: Any
    dead_lettered: Any
    rescued: Any
    breaker_transitions: Any
    deliveries: Any
    delivery_duration: Any
    alert_transitions: Any
    auth_failures: Any
    http_requests: Any
    http_duration: Any
    source_files: Any


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: _Metrics | None = None
    directory: Path | None = None
    db_cache_seconds: float = 5.0
    live_seconds: float = 60.0
    configured: bool = False


_state = _State()


# --------------------------------------------------------------------------- configuration
def metrics_dir(settings: Settings) -> Path | None:
    """The multiprocess directory for these settings (None = single-process mode)."""
    configured = getattr(settings, "metrics_dir", "")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(env) if env else settings.data_dir / "metrics"


def configure_metrics(settings: Settings) -> Path | None:
    """Switch this process to the shared metrics directory of ``settings`` (idempotent).

    Must run before the first metric is recorded; metrics recorded earlier in this process are
    dropped (they lived in a private registry). The directory is exported in
    ``PROMETHEUS_MULTIPROC_DIR`` so child processes inherit it.
    """
    directory = metrics_dir(settings)
    with _state.lock:
        _state.db_cache_seconds = float(getattr(settings, "metrics_db_cache_seconds", 5.0))
        _state.live_seconds = float(settings.lease_seconds)  # the liveness rule: a heartbeat within the lease
        if directory != _state.directory or _state.metrics is None:
            _switch_directory(directory)
        _state.configured = True
    install_telemetry_handlers()
    return directory


def _switch_directory(directory: Path | None) -> None:
    from prometheus_client import values

    from mediamill.fsmode import private_dir

    if directory is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        values.ValueClass = values.MutexValue
    else:
        private_dir(directory)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        # prometheus_client picks its value class when it is first imported; pick it again now
        # that the directory is known (this is what the environment variable would have done).
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _state.directory = directory
    _state.metrics = None


def ensure_configured(settings: Settings) -> None:
    """Configure from ``settings`` unless this process already chose its metrics directory."""
    if not _state.configured:
        configure_metrics(settings)


def reset_for_tests(directory: Path | None, *, wipe: bool = True) -> None:
    """Start from empty counters in ``directory`` (tests and ``serve --fresh-metrics`` only)."""
    with _state.lock:
        if directory is not None and wipe and directory.exists():
            shutil.rmtree(directory)
        _switch_directory(directory)


def _build() -> _Metrics:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry(auto_describe=True)

    def counter(name: str, doc: str, labels: Iterable[str]) -> Any:
        return Counter(name, doc, list(labels), registry=reg)

    def histogram(name: str, doc: str, labels: Iterable[str], buckets: tuple[float, ...]) -> Any:
        return Histogram(name, doc, list(labels), registry=reg, buckets=buckets)

    return _Metrics(
        registry=reg,
        jobs_submitted=counter("mediamill_jobs_submitted", "Jobs accepted", ["workflow"]),
        jobs_finished=counter("mediamill_jobs_finished", "Jobs that reached a terminal status",
                              ["workflow", "status"]),
        job_duration=histogram("mediamill_job_duration_seconds", "Job run time, start to terminal status",
                               ["workflow", "status"], JOB_BUCKETS),
        steps_finished=counter("mediamill_steps_finished", "Step executions by outcome",
                               ["action", "status"]),
        step_failures=counter("mediamill_step_failures", "Failed step executions by error class",
                              ["action", "error_class"]),
        step_duration=histogram("mediamill_step_duration_seconds", "Step execution time",
                                ["action", "status"], STEP_BUCKETS),
        step_retries=counter("mediamill_step_retries", "Step retries scheduled", ["action", "error_class"]),
        dead_lettered=counter("mediamill_jobs_dead_lettered", "Jobs moved to the dead-letter queue",
                              ["workflow", "error_class"]),
        rescued=counter("mediamill_jobs_rescued", "Jobs rescued from dead workers", ["queue"]),
        breaker_transitions=counter("mediamill_breaker_transitions", "Circuit breaker state changes",
                                    ["action", "state"]),
        deliveries=counter("mediamill_notification_deliveries", "Notification delivery attempts",
                           ["channel", "result"]),
        delivery_duration=histogram("mediamill_notification_delivery_seconds", "Delivery attempt time",
                                    ["channel"], DELIVERY_BUCKETS),
        alert_transitions=counter("mediamill_alert_transitions", "Alert state changes",
                                  ["rule", "severity", "state"]),
        auth_failures=counter("mediamill_auth_failures", "Failed authentication attempts (API keys, dashboard "
                              "login) by outcome: invalid or rate_limited", ["surface", "reason"]),
        http_requests=counter("mediamill_http_requests", "HTTP requests", ["method", "route", "status"]),
        http_duration=histogram("mediamill_http_request_duration_seconds", "HTTP request time",
                                ["method", "route"], HTTP_BUCKETS),
        source_files=counter("mediamill_source_files", "Files sources dealt with, by outcome (submitted, "
                             "unreadable, rejected, vanished, done, failed)", ["source", "outcome"]),
    )


def _m() -> _Metrics:
    metrics = _state.metrics
    if metrics is None:
        with _state.lock:
            if _state.metrics is None:
                _state.metrics = _build()
            metrics = _state.metrics
    return metrics


def _label(value: object, default: str = "none") -> str:
    return default if value is None or value == "" else str(value)


# --------------------------------------------------------------------------- engine helpers
def job_submitted(workflow: str | None) -> None:
    """A job was accepted (call once per job, after the submit transaction commits)."""
    _m().jobs_submitted.labels(_label(workflow, "auto")).inc()


def job_finished(workflow: str | None, status: str, duration_s: float | None = None) -> None:
    """A job reached a terminal status (completed, partial, failed, cancelled)."""
    m = _m()
    m.jobs_finished.labels(_label(workflow, "auto"), status).inc()
    if duration_s is not None and duration_s >= 0:
        m.job_duration.labels(_label(workflow, "auto"), status).observe(duration_s)


def step_finished(action: str, status: str, error_class: str | None = None,
                  duration_s: float | None = None) -> None:
    """A step execution ended (status: completed | failed | skipped | …); failures count by class."""
    m = _m()
    m.steps_finished.labels(action, status).inc()
    if error_class or status == "failed":
        m.step_failures.labels(action, _label(error_class, "internal")).inc()
    if duration_s is not None and duration_s >= 0:
        m.step_duration.labels(action, status).observe(duration_s)


def _observe_many(child: Any, values: Sequence[float]) -> None:
    """``child.observe(v)`` for each value, as one write per bucket touched and one to the sum (in multiprocess
    mode every write is a locked write to shared memory). Falls back to ``observe`` on a histogram that does
    not keep its buckets as prometheus_client 0.x does."""
    bounds, buckets, total = (getattr(child, n, None) for n in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None:
        for v in values:
            child.observe(v)
        return
    counts: dict[int, int] = {}
    for v in values:
        i = bisect.bisect_left(bounds, v)  # the first bound >= v (the last bound is +Inf)
        counts[i] = counts.get(i, 0) + 1
    total.inc(sum(values))
    for i, n in counts.items():
        buckets[i].inc(n)


def _finished_batch(rows: Sequence[dict[str, Any]], counter: Any, histogram: Any,
                    labels: Callable[[dict[str, Any]], tuple[str, ...]]) -> None:
    counts: dict[tuple[str, ...], int] = {}
    durations: dict[tuple[str, ...], list[float]] = {}
    for r in rows:
        try:  # one malformed event costs its own count, not the batch's
            key = labels(r)
            d = r.get("duration_s", r.get("duration"))
            d = None if d is None else float(d)
        except (KeyError, TypeError, ValueError):
            continue
        counts[key] = counts.get(key, 0) + 1
        if d is not None and d >= 0:
            durations.setdefault(key, []).append(d)
    for key, n in counts.items():
        counter.labels(*key).inc(n)
    for key, values in durations.items():
        _observe_many(histogram.labels(*key), values)


def jobs_submitted(rows: Sequence[dict[str, Any]]) -> None:
    """:func:`job_submitted` for many jobs (fields as the ``job.submitted`` event has them), one write a workflow."""
    m = _m()
    for workflow, n in collections.Counter(_label(r.get("workflow"), "auto") for r in rows).items():
        m.jobs_submitted.labels(workflow).inc(n)


def jobs_finished(rows: Sequence[dict[str, Any]]) -> None:
    """:func:`job_finished` for many jobs (fields as the ``job.finished`` event has them), one write a label set."""
    m = _m()
    _finished_batch(rows, m.jobs_finished, m.job_duration,
                    lambda r: (_label(r.get("workflow", r.get("workflow_code")), "auto"), str(r["status"])))


def steps_finished(rows: Sequence[dict[str, Any]]) -> None:
    """:func:`step_finished` for many step executions (fields as the ``step.finished`` event has them)."""
    m = _m()
    _finished_batch(rows, m.steps_finished, m.step_duration, lambda r: (str(r["action"]), str(r["status"])))
    failures: dict[tuple[str, str], int] = {}
    for r in rows:
        if r.get("error_class") or r.get("status") == "failed":
            key = (str(r.get("action")), _label(r.get("error_class"), "internal"))
            failures[key] = failures.get(key, 0) + 1
    for key, n in failures.items():
        m.step_failures.labels(*key).inc(n)


def step_retried(action: str, error_class: str | None) -> None:
    """A failed step was scheduled for another attempt."""
    _m().step_retries.labels(action, _label(error_class, "internal")).inc()


def job_dead_lettered(workflow: str | None, error_class: str | None) -> None:
    """A job was moved to the dead-letter queue."""
    _m().dead_lettered.labels(_label(workflow, "auto"), _label(error_class, "internal")).inc()


def job_rescued(queue: str | None) -> None:
    """A job whose worker died was re-queued."""
    _m().rescued.labels(_label(queue, "default")).inc()


def breaker_transition(action: str, state: str) -> None:
    """A circuit breaker changed state (open | half_open | closed)."""
    _m().breaker_transitions.labels(action, state).inc()


def auth_failure(surface: str, reason: str) -> None:
    """An authentication attempt failed (surface: api | dashboard; reason: invalid | rate_limited)."""
    _m().auth_failures.labels(surface, reason).inc()


def notification_delivered(channel: str, result: str, duration_s: float | None = None) -> None:
    """A delivery attempt ended (channel kind: webhook | email | slack; result: delivered | failed | …)."""
    m = _m()
    m.deliveries.labels(channel, result).inc()
    if duration_s is not None:
        m.delivery_duration.labels(channel).observe(duration_s)


def alert_transition(rule: str, severity: str, state: str) -> None:
    """An alert changed state (pending | firing | resolved)."""
    _m().alert_transitions.labels(rule, severity, state).inc()


def http_request(method: str, route: str, status: int, duration_s: float) -> None:
    """An HTTP request finished (``route`` is the template, e.g. ``/v1/jobs/{job_id}``)."""
    m = _m()
    m.http_requests.labels(method, route, str(status)).inc()
    m.http_duration.labels(method, route).observe(duration_s)


def source_file(source: str, outcome: str) -> None:
    """A source took, skipped or finished a file."""
    _m().source_files.labels(source, outcome).inc()


# --------------------------------------------------------------------------- telemetry bus
_TELEMETRY: dict[str, Any] = {}


def _bridge(fn: Any, *names: str) -> Any:
    """Adapt a helper to ``telemetry.emit(event, **fields)``: pick the fields it knows, by name."""

    def handler(**fields: Any) -> None:
        aliases = {"workflow": ("workflow", "workflow_code"), "duration_s": ("duration_s", "duration")}
        kwargs = {}
        for name in names:
            for alias in aliases.get(name, (name,)):
                if alias in fields:
                    kwargs[name] = fields[alias]
                    break
        fn(**kwargs)

    return handler


def install_telemetry_handlers() -> None:
    """Listen to the engine's in-process telemetry bus (``mediamill.telemetry``); idempotent."""
    from mediamill import telemetry

    bridges = {
        "step.retried": _bridge(step_retried, "action", "error_class"),
        "job.dead_lettered": _bridge(job_dead_lettered, "workflow", "error_class"),
        "job.rescued": _bridge(job_rescued, "queue"),
        "breaker.transition": _bridge(breaker_transition, "action", "state"),
        "breaker.state": _bridge(breaker_transition, "action", "state"),
        "source.file": _bridge(source_file, "source", "outcome"),
    }
    for event, handler in bridges.items():
        # telemetry.clear() (tests) drops our handlers; re-install only what is missing
        current = _TELEMETRY.get(event)
        if current is None or current not in telemetry._handlers.get(event, []):
            telemetry.on(event, handler)
            _TELEMETRY[event] = handler
    # outcomes arrive in batches from the worker's writer: counted once a label set, not once a job
    for event, batch in {"job.submitted": jobs_submitted, "job.finished": jobs_finished,
                         "step.finished": steps_finished}.items():
        if batch not in telemetry._batch_handlers.get(event, []):
            telemetry.on_many(event, batch)


# --------------------------------------------------------------------------- exposition
def render(engine: Engine | None = None, *, openmetrics: bool = False,
           extra: Iterable[Any] = ()) -> tuple[bytes, str]:
    """The exposition text of every process's events plus the database gauges, and its content type.

    ``extra``: more collectors (the per-process gauges of a scrape endpoint).
    """
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.openmetrics import exposition as om

    registry = CollectorRegistry()
    if _state.directory is not None:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=str(_state.directory))  # type: ignore[no-untyped-call]
    else:
        registry.register(_ForwardCollector(_m().registry))
    if engine is not None:
        registry.register(_db_collector(engine))
    for collector in extra:
        registry.register(collector)
    if openmetrics:
        return om.generate_latest(registry), om.CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _ForwardCollector:
    """Exposes a private registry's metrics through another registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        yield from self._source.collect()


_collectors: dict[int, Any] = {}


def _db_collector(engine: Engine) -> Any:
    from mediamill.observability.dbgauges import DbGaugeCollector

    key = id(engine)
    got = _collectors.get(key)
    if got is None or got.engine is not engine:
        got = DbGaugeCollector(engine, cache_seconds=lambda: _state.db_cache_seconds,
                               live_seconds=lambda: _state.live_seconds)
        _collectors[key] = got
    return got
