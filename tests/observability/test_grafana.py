"""The shipped Grafana dashboard only queries metrics that /metrics really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from mediamill.config import Settings
from mediamill.observability import metrics
from mediamill.observability.endpoint import MetricsEndpoint, endpoint_collector, worker_gauges
from mediamill.store import tables as t
from mediamill.store.timeutil import utcnow

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mediamill.json"


def _exposed(engine: Engine) -> set[str]:
    metrics.job_submitted("WF")
    metrics.job_finished("WF", "failed", 1.0)
    metrics.step_finished("noop", "failed", "transient", 0.1)
    metrics.step_retried("noop", "transient")
    metrics.job_dead_lettered("WF", "transient")
    metrics.job_rescued("video")
    metrics.notification_delivered("webhook", "sent", 0.1)
    metrics.http_request("GET", "/healthz", 200, 0.001)
    metrics.source_file("inbox", "submitted")
    with engine.begin() as conn:
        conn.execute(t.workers.insert().values(id="w", pools={"video": 1}, heartbeat_at=utcnow()))
        conn.execute(t.circuit_breakers.insert().values(action="noop", state="open"))
    # what a worker's own scrape endpoint adds (mediamill worker --metrics-port)
    worker = SimpleNamespace(worker_id="w", pools={"video": 1}, running={})
    endpoint = MetricsEndpoint(role="worker", port=0, worker="w", gauges=worker_gauges(worker))
    text = metrics.render(engine, extra=[endpoint_collector(endpoint)])[0].decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples} | {
        f.name for f in text_string_to_metric_families(text)}


def test_dashboard_queries_known_metrics(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    metrics.reset_for_tests(tmp_path / "grafana-metrics")
    try:
        exposed = _exposed(engine)
    finally:
        metrics.reset_for_tests(None, wipe=False)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for p in dashboard["panels"] for target in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {name for e in exprs for name in re.findall(r"mediamill_[a-z_]+", e)}
    assert used - exposed == set()
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "p95", "error", "queue", "breaker", "worker"):
        assert topic in titles
