"""Every `worker`, `api` and `notifier` process serves its own scrape endpoint; the dashboard sums a fleet."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediamill.config import Settings
from mediamill.engine import operations as ops
from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.runtime import Runtime
from tests.fleet.support import FLEET_SECRET_KEY, log_of, mediamill_process, stop
from tests.helpers import PG_SKIP_REASON, PG_URL, apply_workflow, free_port, postgres_database, wait_until

needs_postgres = pytest.mark.skipif(not PG_URL, reason=PG_SKIP_REASON)
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mediamill.json"


def _scrape(url: str) -> str:
    res = httpx.get(url, timeout=10)
    assert res.status_code == 200, res.text
    return res.text


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _promtool_clean(text: str) -> None:
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, object]]:
    with postgres_database("mm_metrics") as url:
        data = tmp_path / "data"  # one data dir for all three: private metrics dirs keep their counts apart
        env = {"MEDIAMILL_STORAGE_URL": f"file://{tmp_path / 'storage'}"}
        rt = Runtime(Settings(data_dir=tmp_path / "client", database_url=url, secret_key=FLEET_SECRET_KEY,
                              storage_url=env["MEDIAMILL_STORAGE_URL"]))
        rt.prepare()
        apply_workflow(rt, {"code": "WF-M", "name": "m", "type": "generic", "queue": "m",
                            "steps": [{"name": "a", "action": "noop"}]})
        ports = {"worker": free_port(), "api": free_port(), "notifier": free_port(), "http": free_port()}
        procs = {
            "worker": mediamill_process(["worker", "--no-migrate", "--pool", "m=2",
                                         "--metrics-port", str(ports["worker"])],
                                        data_dir=data, database_url=url, log_name="worker", env=env),
            "api": mediamill_process(["api", "--no-migrate", "--port", str(ports["http"])], data_dir=data,
                                     database_url=url, log_name="api",
                                     env={**env, "MEDIAMILL_METRICS_PORT": str(ports["api"])}),
            "notifier": mediamill_process(["notifier", "--metrics-port", str(ports["notifier"])], data_dir=data,
                                          database_url=url, log_name="notifier", env=env),
        }
        try:
            for role, proc in procs.items():
                wait_until(lambda r=role, p=proc: _up(ports[r]) or p.poll() is not None, timeout=90,
                           interval=0.2, message=f"{role} endpoint")
                assert proc.poll() is None, log_of(data, role)
            yield {"rt": rt, "ports": ports, "procs": procs, "data": data}
        finally:
            for proc in procs.values():
                stop(proc)
            rt.close()


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@needs_postgres
def test_each_process_is_a_scrape_target(fleet: dict[str, object], tmp_path: Path) -> None:
    rt: Runtime = fleet["rt"]  # type: ignore[assignment]
    ports: dict[str, int] = fleet["ports"]  # type: ignore[assignment]
    src = tmp_path / "in.txt"
    src.write_text("x")
    inp = store_input_file(rt.storage, src)
    ids = [submit_job(rt.engine, SubmitRequest(job_input=inp, workflow_code="WF-M")).id for _ in range(3)]
    wait_until(lambda: all(ops.get_job(rt.engine, i)["status"] == "completed" for i in ids), timeout=60,
               interval=0.2, message="jobs completed by the worker process")

    texts = {role: _scrape(f"http://127.0.0.1:{ports[role]}/metrics") for role in ("worker", "api", "notifier")}
    for text in texts.values():
        _promtool_clean(text)
    worker = _samples(texts["worker"])
    api = _samples(texts["api"])
    notifier = _samples(texts["notifier"])

    # the worker counts its own steps and jobs, under today's names
    assert sum(v for n, lab, v in worker if n == "mediamill_steps_finished_total"
               and lab == {"action": "noop", "status": "completed"}) == 3
    assert sum(v for n, lab, v in worker if n == "mediamill_jobs_finished_total"
               and lab.get("status") == "completed") == 3
    info = [lab for n, lab, _ in worker if n == "mediamill_process_info"]
    assert len(info) == 1 and info[0]["role"] == "worker" and info[0]["worker"] and info[0]["host"]
    slots = {lab["pool"]: v for n, lab, v in worker if n == "mediamill_worker_process_slots"}
    assert slots == {"m": 2}
    assert any(n == "mediamill_worker_jobs_running" and lab["worker"] == info[0]["worker"] for n, lab, _ in worker)
    assert not any(n.startswith("mediamill_queue_depth") for n, _, _ in worker)  # the database's figures: API only

    # the API serves the database gauges and never re-counts the worker's events
    assert not any(n == "mediamill_steps_finished_total" for n, _, _ in api)
    assert any(n == "mediamill_workers_live_all" and v == 1 for n, _, v in api)
    assert any(n == "mediamill_db_up" and v == 1 for n, _, v in api)
    assert [lab["role"] for n, lab, _ in api if n == "mediamill_process_info"] == ["api"]
    assert [lab["role"] for n, lab, _ in notifier if n == "mediamill_process_info"] == ["notifier"]

    health = httpx.get(f"http://127.0.0.1:{ports['worker']}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["worker"] == info[0]["worker"]
    assert httpx.get(f"http://127.0.0.1:{ports['worker']}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{ports['worker']}/nope", timeout=5).status_code == 404
    # the API's own /metrics route shows what its scrape port shows
    main = _samples(_scrape(f"http://127.0.0.1:{ports['http']}/metrics"))
    assert not any(n == "mediamill_steps_finished_total" for n, _, _ in main)


def test_metrics_port_flag_is_on_every_long_running_command() -> None:
    import sys

    for cmd in ("worker", "api", "notifier"):
        out = subprocess.run([sys.executable, "-m", "mediamill.cli.main", cmd, "--help"], capture_output=True,
                             text=True, timeout=60, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                                                         "PYTHONPATH": ":".join(sys.path)})
        assert out.returncode == 0 and "--metrics-port" in out.stdout, out.stdout + out.stderr


# ------------------------------------------------------------------ the dashboard against several targets
def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return [e.replace("$__rate_interval", "1m").replace('=~"$workflow"', '=~".*"') for e in exprs]


def test_every_dashboard_query_aggregates_across_instances() -> None:
    for expr in _dashboard_exprs():
        # each metric selector sits inside sum/max/min/count (possibly through rate and histogram_quantile),
        # so a fleet of targets gives one line per meaningful label, not one per instance
        assert re.match(r"^\s*(sum|max|min|count|histogram_quantile)\b", expr), expr
        for name in re.findall(r"mediamill_[a-z_]+", expr):
            assert not re.search(r"by \([^)]*\binstance\b", expr), expr
            if name.endswith(("_total", "_bucket")):
                assert f"rate({name}" in expr, f"{name} must be a rate: {expr}"


def test_dashboard_against_three_targets_with_promtool(tmp_path: Path) -> None:
    """Two API replicas report the same database gauges; two workers report their own counters."""
    series = """
      - series: 'mediamill_queue_depth{job="mediamill-api",instance="api-1",queue="video",state="queued"}'
        values: '7x20'
      - series: 'mediamill_queue_depth{job="mediamill-api",instance="api-2",queue="video",state="queued"}'
        values: '7x20'
      - series: 'mediamill_workers_live_all{job="mediamill-api",instance="api-1"}'
        values: '3x20'
      - series: 'mediamill_workers_live_all{job="mediamill-api",instance="api-2"}'
        values: '3x20'
      - series: 'mediamill_jobs_finished_total{job="mediamill-worker",instance="w-1",workflow="WF",status="completed"}'
        values: '0+60x20'
      - series: 'mediamill_jobs_finished_total{job="mediamill-worker",instance="w-2",workflow="WF",status="completed"}'
        values: '0+120x20'
      - series: 'mediamill_worker_jobs_running{job="mediamill-worker",instance="w-1",worker="a-1",host="h1"}'
        values: '1x20'
      - series: 'mediamill_worker_jobs_running{job="mediamill-worker",instance="w-2",worker="b-1",host="h2"}'
        values: '2x20'
      - series: 'mediamill_worker_jobs_running{job="mediamill-worker",instance="w-3",worker="b-2",host="h2"}'
        values: '1x20'
    """
    exprs = {e for e in _dashboard_exprs()}
    jobs_per_min = next(e for e in exprs if e.startswith("sum(rate(mediamill_jobs_finished_total") and "* 60" in e)
    waiting = next(e for e in exprs if "mediamill_queue_depth{state=\"queued\"}" in e)
    live = next(e for e in exprs if "mediamill_workers_live_all" in e)
    depth = next(e for e in exprs if e.startswith("max by (queue, state) (mediamill_queue_depth"))
    per_host = next(e for e in exprs if "mediamill_worker_jobs_running" in e)
    tests = f"""
rule_files: []
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:{series}
    promql_expr_test:
      - expr: {json.dumps(jobs_per_min)}
        eval_time: 10m
        exp_samples: [{{labels: '{{}}', value: 180}}]
      - expr: {json.dumps(waiting)}
        eval_time: 10m
        exp_samples: [{{labels: '{{}}', value: 7}}]
      - expr: {json.dumps(live)}
        eval_time: 10m
        exp_samples: [{{labels: '{{}}', value: 3}}]
      - expr: {json.dumps(depth)}
        eval_time: 10m
        exp_samples: [{{labels: '{{queue="video",state="queued"}}', value: 7}}]
      - expr: {json.dumps(per_host)}
        eval_time: 10m
        exp_samples: [{{labels: '{{host="h1"}}', value: 1}}, {{labels: '{{host="h2"}}', value: 3}}]
"""
    (tmp_path / "dashboard_test.yml").write_text(tests)
    done = subprocess.run(["promtool", "test", "rules", "dashboard_test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # and every query of the dashboard evaluates against those targets (promtool parses each)
    lines = "\n".join(f"      - expr: {json.dumps(e)}\n        eval_time: 10m\n        exp_samples: []"
                      for e in sorted(exprs) if "mediamill_queue_depth" not in e and "jobs_finished" not in e
                      and "workers_live_all" not in e and "worker_jobs_running" not in e)
    (tmp_path / "all_test.yml").write_text(tests.split("    promql_expr_test:")[0] + "    promql_expr_test:\n"
                                           + lines + "\n")
    done = subprocess.run(["promtool", "test", "rules", "all_test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
