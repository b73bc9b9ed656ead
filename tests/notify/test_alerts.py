"""Alert rules: sustained conditions only, one notification on firing and one on resolving."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mediamill.config import Settings
from mediamill.errors import ConfigError
from mediamill.notify.alert_rules import AlertRule, load_rules, parse_duration
from mediamill.notify.alerting import Alerter, list_alerts
from mediamill.store import analytics
from mediamill.store import tables as t
from mediamill.store.timeutil import utcnow

from .support import insert_job, insert_workflow, make_settings

ERROR_RATE = AlertRule.model_validate({
    "name": "errors", "kind": "error_rate", "severity": "P2", "for": "5s", "runbook": "look at the DLQ",
    "params": {"window_seconds": 60, "threshold": 0.5, "min_samples": 3, "by": "error_class"}})


def _events(engine: Engine, event_type: str) -> list[dict]:
    wn = t.workflow_notifications
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(wn).where(wn.c.event_type == event_type,
                                                                  wn.c.channel.is_(None))).mappings()]


def _jobs(engine: Engine, n: int, status: str, error_class: str | None = None) -> None:
    """Finished jobs as the engine leaves them: a failed one has finished_at (no completed_at) and a dead letter."""
    wf = insert_workflow(engine)
    for _ in range(n):
        job = insert_job(engine, workflow_id=wf, status=status, error_class=error_class)
        if status == "failed":
            with engine.begin() as conn:
                conn.execute(t.dead_letters.insert().values(job_id=job, error_class=error_class,
                                                            workflow_code="WF-VIDEO-TRANSCODE", created_at=utcnow()))


def test_single_failure_never_fires(engine: Engine, settings: Settings) -> None:
    alerter = Alerter(engine=engine, settings=settings, rules=[ERROR_RATE])
    _jobs(engine, 1, "failed", "transient")
    now = utcnow()
    for offset in (0, 6, 12):
        alerter.evaluate_once(now + timedelta(seconds=offset))
    with engine.connect() as conn:
        assert list_alerts(conn) == []
    assert _events(engine, "alert.firing") == []


def test_sustained_failure_fires_once_and_resolves_once(engine: Engine, settings: Settings) -> None:
    alerter = Alerter(engine=engine, settings=settings, rules=[ERROR_RATE])
    _jobs(engine, 4, "failed", "transient")
    _jobs(engine, 1, "completed")
    t0 = utcnow()

    assert [c.state for c in alerter.evaluate_once(t0)] == ["pending"]
    assert alerter.evaluate_once(t0 + timedelta(seconds=3)) == []
    assert _events(engine, "alert.firing") == []
    assert [c.state for c in alerter.evaluate_once(t0 + timedelta(seconds=5.5))] == ["firing"]
    for offset in (7, 9, 11):
        alerter.evaluate_once(t0 + timedelta(seconds=offset))
    firing = _events(engine, "alert.firing")
    assert len(firing) == 1
    data = firing[0]["payload"]["data"]
    assert data["labels"] == {"error_class": "transient"} and data["severity"] == "P2"
    assert data["runbook"] == "look at the DLQ" and data["value"] == pytest.approx(0.8)

    _jobs(engine, 10, "completed")  # the rate falls to 4/15
    assert [c.state for c in alerter.evaluate_once(t0 + timedelta(seconds=12))] == ["resolved"]
    alerter.evaluate_once(t0 + timedelta(seconds=14))
    assert len(_events(engine, "alert.resolved")) == 1
    with engine.connect() as conn:
        (alert,) = list_alerts(conn)
    assert alert["state"] == "resolved" and alert["fired_at"] and alert["resolved_at"]


def test_aggregates_by_error_class(engine: Engine, settings: Settings) -> None:
    rule = ERROR_RATE.model_copy(update={"for_seconds": 0.0,
                                         "params": {**ERROR_RATE.params, "threshold": 0.2}})
    _jobs(engine, 3, "failed", "transient")
    _jobs(engine, 3, "failed", "timeout")
    _jobs(engine, 3, "completed")
    changes = Alerter(engine=engine, settings=settings, rules=[rule]).evaluate_once()
    fired = sorted(c.labels["error_class"] for c in changes if c.state == "firing")
    assert fired == ["timeout", "transient"]


def test_error_rate_is_the_summary_error_rate(engine: Engine, settings: Settings) -> None:
    """failed / finished over finished_at: cancelled jobs count as finished, and a failure retried to
    success counts once, as the success it became (its resolved dead letter is no failure)."""
    rule = ERROR_RATE.model_copy(update={"for_seconds": 0.0, "params": {**ERROR_RATE.params, "by": None,
                                                                        "threshold": 0.4}})
    _jobs(engine, 3, "failed", "transient")
    _jobs(engine, 2, "cancelled")
    _jobs(engine, 1, "completed")
    retried = insert_job(engine, workflow_id=insert_workflow(engine), status="completed")
    with engine.begin() as conn:
        conn.execute(t.dead_letters.insert().values(job_id=retried, error_class="transient", created_at=utcnow(),
                                                    resolved_at=utcnow(), resolution="retried"))
    changes = Alerter(engine=engine, settings=settings, rules=[rule]).evaluate_once()
    assert [c.state for c in changes][-1] == "firing"
    with engine.connect() as conn:
        figures = analytics.summary(conn, tenant_id="default", window_seconds=60)
        (alert,) = list_alerts(conn)
    assert (figures["finished"], figures["failed"]) == (7, 3)
    assert alert["value"] == pytest.approx(figures["error_rate"]) == pytest.approx(3 / 7)


def test_concurrent_evaluators_fire_once(engine: Engine, settings: Settings) -> None:
    rule = ERROR_RATE.model_copy(update={"for_seconds": 0.0})
    _jobs(engine, 5, "failed", "transient")
    alerters = [Alerter(engine=engine, settings=settings, rules=[rule]) for _ in range(4)]
    threads = [threading.Thread(target=a.evaluate_once) for a in alerters]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(_events(engine, "alert.firing")) == 1


def test_pipeline_stopped_queue_wait_breaker_and_dead_letters(engine: Engine, settings: Settings) -> None:
    rules = [AlertRule.model_validate(r) for r in (
        {"name": "stopped", "kind": "no_live_worker", "severity": "P1", "for": 0},
        {"name": "wait", "kind": "queue_wait", "for": 0, "params": {"threshold_seconds": 60}},
        {"name": "depth", "kind": "queue_depth", "for": 0, "params": {"threshold": 1}},
        {"name": "breaker", "kind": "breaker_open", "for": 0},
        {"name": "dlq", "kind": "dead_letter_growth", "for": 0, "params": {"threshold": 1}},
    )]
    wf = insert_workflow(engine)
    old = utcnow() - timedelta(seconds=300)
    with engine.begin() as conn:
        for _ in range(2):
            job = conn.execute(t.workflow_jobs.insert().values(job_code=f"J{_}", workflow_id=wf, status="queued")
                               .returning(t.workflow_jobs.c.id)).scalar_one()
            conn.execute(t.media_queue.insert().values(job_id=job, queue_name="video", status="queued",
                                                       created_at=old, scheduled_time=old))
            conn.execute(t.dead_letters.insert().values(job_id=job, error_class="invalid_input",
                                                        created_at=utcnow()))
        conn.execute(t.circuit_breakers.insert().values(action="transcode_video", state="open"))
        conn.execute(t.workers.insert().values(id="w-image", pools={"image": 2}, heartbeat_at=utcnow(),
                                               status="running"))
    alerter = Alerter(engine=engine, settings=settings, rules=rules)
    fired = {(c.rule, tuple(c.labels.items())) for c in alerter.evaluate_once() if c.state == "firing"}
    assert fired == {("stopped", (("queue", "video"),)), ("wait", (("queue", "video"),)),
                     ("depth", (("queue", "video"),)), ("breaker", (("action", "transcode_video"),)),
                     ("dlq", ())}

    with engine.begin() as conn:  # a video worker comes alive and the breaker closes
        conn.execute(t.workers.insert().values(id="w-video", pools={"video": 1}, heartbeat_at=utcnow(),
                                               status="running"))
        conn.execute(t.circuit_breakers.update().values(state="closed"))
    resolved = {c.rule for c in alerter.evaluate_once() if c.state == "resolved"}
    assert resolved == {"stopped", "breaker"}


def test_rules_from_file_env_and_table(engine: Engine, tmp_path: Path, db_url: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "from-file"\nkind = "queue_depth"\nfor = "2m"\nseverity = "P3"\n'
                    'params = { threshold = 5000 }\n')
    settings = make_settings(tmp_path, db_url, alert_default_rules=True, alert_rules_file=str(path),
                             alert_rules_json='[{"name": "pipeline-stopped", "kind": "no_live_worker", '
                                              '"severity": "P1", "for": "30s"}]')
    with engine.begin() as conn:
        conn.execute(t.alert_rules.insert().values(name="from-table", kind="breaker_open", severity="P2",
                                                   for_seconds=10, params={}))
        rules = {r.name: r for r in load_rules(settings, conn)}
    assert rules["from-file"].for_seconds == 120 and rules["from-file"].param("threshold") == 5000
    assert rules["pipeline-stopped"].for_seconds == 30  # the environment overrides the built-in
    assert rules["from-table"].kind == "breaker_open" and "high-error-rate" in rules
    assert parse_duration("1h") == 3600 and parse_duration(15) == 15

    path.write_text('[[rules]]\nname = "bad"\nkind = "error_rate"\nparams = { treshold = 1 }\n')
    with pytest.raises(ConfigError, match="unknown params"):
        load_rules(settings)
