"""Prometheus metrics: strict exposition format, several processes summed, database gauges true."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from mediamill.config import Settings
from mediamill.observability import metrics
from mediamill.store import tables as t
from mediamill.store.timeutil import utcnow

from .support import insert_job, insert_workflow


@pytest.fixture(autouse=True)
def fresh_metrics(settings: Settings) -> Iterator[None]:
    metrics.reset_for_tests(Path(settings.metrics_dir))
    metrics.configure_metrics(settings)
    yield
    metrics.reset_for_tests(None, wipe=False)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition strictly: name + sorted labels → value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def check_exposition(text: str) -> None:
    """`promtool check metrics` when installed (CI installs Debian's prometheus); the parser otherwise."""
    list(text_string_to_metric_families(text))
    promtool = shutil.which("promtool")
    if promtool:
        done = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_helpers_render_valid_exposition(engine: Engine) -> None:
    metrics.job_submitted("WF-A")
    metrics.job_finished("WF-A", "completed", 12.5)
    metrics.job_finished("WF-A", "failed", 3.0)
    metrics.step_finished("transcode_video", "failed", "transient", 0.4)
    metrics.step_retried("transcode_video", "transient")
    metrics.notification_delivered("webhook", "sent", 0.01)
    metrics.http_request("GET", "/v1/jobs/{job_id}", 200, 0.003)

    text, content_type = metrics.render(engine)
    body = text.decode()
    check_exposition(body)
    got = samples(body)
    assert content_type.startswith("text/plain")
    assert got[("mediamill_jobs_submitted_total", (("workflow", "WF-A"),))] == 1
    assert got[("mediamill_jobs_finished_total", (("status", "failed"), ("workflow", "WF-A")))] == 1
    assert got[("mediamill_job_duration_seconds_bucket", (("le", "30.0"), ("status", "completed"),
                                                          ("workflow", "WF-A")))] == 1
    assert got[("mediamill_step_failures_total", (("action", "transcode_video"), ("error_class", "transient")))] == 1
    assert got[("mediamill_db_up", ())] == 1
    om, om_type = metrics.render(engine, openmetrics=True)
    assert om_type.startswith("application/openmetrics-text") and om.decode().endswith("# EOF\n")


def _engine_series(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v for k, v in samples(text).items()
            if k[0].startswith(("mediamill_jobs_submitted", "mediamill_jobs_finished", "mediamill_job_duration",
                                "mediamill_steps_finished",
                                "mediamill_step_duration", "mediamill_step_failures"))}


def test_a_batch_of_outcomes_counts_exactly_as_one_by_one(engine: Engine, settings: Settings) -> None:
    """The writer reports a batch's jobs and steps in one telemetry call (one shared-memory write a label set and
    bucket): the exposition is the same as if each had been reported alone, bucket by bucket."""
    from mediamill import telemetry

    durations = [0.0, 0.004, 0.3, 0.3, 7.0, 1e6, None]
    jobs = [{"workflow": "WF-A", "status": "completed" if i % 3 else "failed", "job_id": i, "duration_s": d}
            for i, d in enumerate(durations)]
    steps = [{"action": "noop", "status": "failed" if i % 3 == 0 else "completed",
              "error_class": "transient" if i % 3 == 0 else None, "duration_s": d or 0.0, "workflow": "WF-A"}
             for i, d in enumerate(durations)]
    submitted = [{"workflow": w, "job_id": i, "tenant": None} for i, w in enumerate(["WF-A", "WF-B", None, "WF-A"])]
    for j in submitted:
        metrics.job_submitted(j["workflow"])
    for j in jobs:
        metrics.job_finished(j["workflow"], j["status"], j["duration_s"])
    for s in steps:
        metrics.step_finished(s["action"], s["status"], s["error_class"], s["duration_s"])
    one_by_one = _engine_series(metrics.render(engine)[0].decode())
    assert one_by_one[("mediamill_jobs_finished_total", (("status", "completed"), ("workflow", "WF-A")))] == 4

    metrics.reset_for_tests(Path(settings.metrics_dir))
    metrics.configure_metrics(settings)
    metrics.install_telemetry_handlers()
    telemetry.emit_many("job.submitted", submitted)
    telemetry.emit_many("job.finished", jobs)
    telemetry.emit_many("step.finished", steps)
    batched = _engine_series(metrics.render(engine)[0].decode())
    assert batched == one_by_one
    assert batched[("mediamill_jobs_submitted_total", (("workflow", "WF-A"),))] == 2


def test_several_processes_are_summed(settings: Settings, engine: Engine) -> None:
    script = textwrap.dedent(f"""
        from mediamill.config import load_settings
        from mediamill.observability import logging as mlog, metrics
        s = load_settings(data_dir={str(settings.data_dir)!r}, metrics_dir={settings.metrics_dir!r},
                          database_url={settings.database_url!r})
        mlog.configure(s, "worker")
        for _ in range(3):
            metrics.job_finished("WF-MP", "completed", 1.0)
        metrics.step_finished("noop", "completed", None, 0.01)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert all(p.wait(60) == 0 for p in procs)
    metrics.job_finished("WF-MP", "completed", 1.0)  # this process too

    got = samples(metrics.render(engine)[0].decode())
    assert got[("mediamill_jobs_finished_total", (("status", "completed"), ("workflow", "WF-MP")))] == 7
    assert got[("mediamill_job_duration_seconds_count", (("status", "completed"), ("workflow", "WF-MP")))] == 7
    assert got[("mediamill_steps_finished_total", (("action", "noop"), ("status", "completed")))] == 2


def test_database_gauges_match_the_database(engine: Engine, settings: Settings) -> None:
    wf = insert_workflow(engine)
    now = utcnow()
    entries = [("video", "queued", now - timedelta(seconds=120)), ("video", "queued", now - timedelta(seconds=30)),
               ("video", "queued", now + timedelta(seconds=600)), ("video", "processing", now),
               ("image", "queued", None), ("image", "completed", now - timedelta(days=1))]
    jobs = [insert_job(engine, workflow_id=wf, status=status) for _, status, _ in entries]
    with engine.begin() as conn:
        for job, (queue, status, scheduled) in zip(jobs, entries, strict=True):
            conn.execute(t.media_queue.insert().values(job_id=job, queue_name=queue, status=status,
                                                       scheduled_time=scheduled, created_at=now - timedelta(seconds=5)))
        conn.execute(t.workers.insert().values(id="w1", pools={"video": 2, "image": 1}, heartbeat_at=now))
        conn.execute(t.workers.insert().values(id="w2", pools=["image=4"], heartbeat_at=now))
        conn.execute(t.workers.insert().values(id="dead", pools={"video": 8}, heartbeat_at=now - timedelta(hours=1)))
        conn.execute(t.circuit_breakers.insert().values(action="transcode_video", state="open"))
        conn.execute(t.circuit_breakers.insert().values(action="resize_image", state="closed"))
        conn.execute(t.dead_letters.insert().values(job_id=jobs[0], error_class="invalid_input"))
        conn.execute(t.queues.insert().values(name="image", paused=True))

    got = samples(metrics.render(engine)[0].decode())
    assert got[("mediamill_queue_depth", (("queue", "video"), ("state", "queued")))] == 2
    assert got[("mediamill_queue_depth", (("queue", "video"), ("state", "delayed")))] == 1
    assert got[("mediamill_queue_depth", (("queue", "video"), ("state", "processing")))] == 1
    assert got[("mediamill_queue_depth", (("queue", "image"), ("state", "queued")))] == 1
    assert 119 <= got[("mediamill_queue_oldest_wait_seconds", (("queue", "video"),))] < 140
    assert got[("mediamill_workers_live", (("pool", "image"),))] == 2
    assert got[("mediamill_worker_slots", (("pool", "image"),))] == 5
    assert got[("mediamill_workers_live", (("pool", "video"),))] == 1
    assert got[("mediamill_workers_live_all", ())] == 2
    assert got[("mediamill_breaker_state", (("action", "transcode_video"), ("state", "open")))] == 1
    assert got[("mediamill_breaker_state", (("action", "resize_image"), ("state", "open")))] == 0
    assert got[("mediamill_dead_letters_open", (("error_class", "invalid_input"),))] == 1
    assert got[("mediamill_queue_paused", (("queue", "image"),))] == 1


def test_scrape_survives_a_missing_database(tmp_path: Path) -> None:
    from mediamill.store.db import create_db_engine

    broken = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema
    got = samples(metrics.render(broken)[0].decode())
    assert got[("mediamill_db_up", ())] == 0
