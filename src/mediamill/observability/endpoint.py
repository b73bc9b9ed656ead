"""A Prometheus scrape endpoint of one process (``--metrics-port`` / ``MEDIAMILL_METRICS_PORT``).

In a fleet every ``worker``, ``api`` and ``notifier`` process is a scrape target of its own.
Each then keeps its counters in a private multiprocess directory (shared only with its own
children: step children of a worker, uvicorn processes of an API), so no event is counted by two
targets and Prometheus sums them across instances. Routes:

* ``/metrics`` — the process's event counters and histograms (same names as the API's
  ``/metrics``), ``mediamill_process_info{role,host,worker}``, per-process gauges a role adds
  (a worker's running jobs and slots) and, where ``db_gauges`` is on (the API), the database
  gauges (queue depth …; the same figure from every API replica, so dashboards take their max);
* ``/healthz`` — liveness: 200 while the process's own loops run, 503 otherwise;
* ``/readyz`` — readiness: 200 when the database answers.

It is plain HTTP without authentication: bind it (``MEDIAMILL_METRICS_HOST``) where only the
scraper reaches it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediamill import __version__
from mediamill.observability import metrics

if TYPE_CHECKING:
    from prometheus_client.core import GaugeMetricFamily

    from mediamill.config import Settings
    from mediamill.store.db import Engine

#: What a role's health callback answers: whether the process works, and details for the body.
Health = Callable[[], tuple[bool, dict[str, Any]]]
#: Extra per-process gauges of a role, computed at scrape time.
Gauges = Callable[[], list["GaugeMetricFamily"]]


def private_metrics_dir(settings: Settings, role: str) -> Path | None:
    """Give this process (and the children it starts) a metrics directory of its own; returns it.

    Called before observability is configured. The directory is emptied now and removed at exit.
    ``MEDIAMILL_METRICS_DIR=off`` keeps single-process mode (children's events are then lost).
    """
    base = metrics.metrics_dir(settings)
    if base is None:
        return None
    private = base / f"{role}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(private, ignore_errors=True)
    private.mkdir(parents=True, exist_ok=True)
    settings.metrics_dir = str(private)
    os.environ["MEDIAMILL_METRICS_DIR"] = str(private)  # step children and uvicorn workers inherit it
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    return private


@dataclass
class MetricsEndpoint:
    """``/metrics``, ``/healthz`` and ``/readyz`` of one process on a port of its own, in a daemon thread."""

    role: str
    port: int
    bind: str = "127.0.0.1"
    engine: Engine | None = None
    db_gauges: bool = False
    worker: str = ""
    health: Health | None = None
    gauges: Gauges | None = None
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{self.bind}:{self._server.server_port}"

    def start(self) -> MetricsEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server dispatches to
                endpoint._answer(self)

            def log_message(self, *_: Any) -> None:  # scrapes every few seconds would flood the log
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((self.bind, self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=f"mm-metrics-{self.role}", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ routes
    def _answer(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                openmetrics = "application/openmetrics-text" in req.headers.get("Accept", "")
                body, content_type = metrics.render(self.engine if self.db_gauges else None,
                                                    openmetrics=openmetrics, extra=[endpoint_collector(self)])
                self._send(req, 200, body, content_type)
            elif path == "/healthz":
                ok, detail = self.health() if self.health else (True, {})
                self._json(req, 200 if ok else 503, {"status": "ok" if ok else "unhealthy", "role": self.role,
                                                     **detail})
            elif path == "/readyz":
                ok, detail = self._ready()
                self._json(req, 200 if ok else 503, {"status": "ok" if ok else "unavailable", **detail})
            else:
                self._json(req, 404, {"status": "not found", "routes": ["/metrics", "/healthz", "/readyz"]})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the scraper gave up; nothing to answer

    def _ready(self) -> tuple[bool, dict[str, Any]]:
        if self.engine is None:
            return True, {}
        from mediamill.store.db import ping

        try:
            ping(self.engine)
        except Exception as exc:  # any driver error means not ready
            return False, {"detail": type(exc).__name__}
        return True, {}

    @staticmethod
    def _json(req: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        MetricsEndpoint._send(req, status, json.dumps(body).encode(), "application/json")

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)


class _Collector:
    """``mediamill_process_info`` plus the role's own gauges."""

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self._endpoint = endpoint

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        info = GaugeMetricFamily("mediamill_process_info", "One per scraped mediamill process",
                                 labels=["role", "host", "worker", "version"])
        info.add_metric([self._endpoint.role, socket.gethostname(), self._endpoint.worker, __version__], 1)
        yield info
        if self._endpoint.gauges is not None:
            yield from self._endpoint.gauges()


def endpoint_collector(endpoint: MetricsEndpoint) -> Any:
    """The collector of an endpoint's per-process series (``mediamill_process_info`` and the role's gauges)."""
    return _Collector(endpoint)


def worker_gauges(worker: Any) -> Gauges:
    """Per-process gauges of a worker, labelled with its id and host."""

    def gauges() -> list[GaugeMetricFamily]:
        from prometheus_client.core import GaugeMetricFamily

        host = socket.gethostname()
        running = GaugeMetricFamily("mediamill_worker_jobs_running", "Jobs this worker is running now",
                                    labels=["worker", "host"])
        running.add_metric([worker.worker_id, host], len(worker.running))
        slots = GaugeMetricFamily("mediamill_worker_process_slots", "Step slots of this worker per pool",
                                  labels=["worker", "host", "pool"])
        for pool, concurrency in sorted(worker.pools.items()):
            slots.add_metric([worker.worker_id, host, pool], concurrency)
        return [running, slots]

    return gauges
