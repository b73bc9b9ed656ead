"""End to end through the engine: real jobs (``noop`` / ``fail``) on a real worker, the Notifier running.

- every finished job reaches a signed webhook; the events carry the job's request id;
- an error-rate rule with ``for: 5s`` ignores a single failure, fires once on a sustained failure
  rate and resolves once when successes bring the rate down;
- the metrics the engine recorded match the database.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.notify import channels as ch
from mediamill.notify.runner import Notifier
from mediamill.observability import metrics
from mediamill.runtime import Runtime
from mediamill.store import tables as t
from mediamill.store import workflow_repo
from mediamill.workflows.loader import validate_document

from .support import Receiver, make_settings, wait_until

RULE = {"name": "e2e-errors", "kind": "error_rate", "severity": "P2", "for": "5s", "runbook": "see DLQ",
        "params": {"window_seconds": 120, "threshold": 0.5, "min_samples": 3}}
WORKFLOWS = [
    {"code": "WF-E2E-OK", "name": "ok", "type": "generic", "queue": "e2e", "input_types": ["*/*"],
     "steps": [{"name": "Nothing", "action": "noop"}]},
    {"code": "WF-E2E-FAIL", "name": "fail", "type": "generic", "queue": "e2e", "input_types": ["*/*"],
     "retry_count": 0, "steps": [{"name": "Boom", "action": "fail",
                                  "params": {"error_class": "invalid_input", "message": "corrupt file header"}}]},
]


@pytest.fixture
def rt(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    settings = make_settings(tmp_path, db_url, alert_rules_json=json.dumps([RULE]), alert_eval_seconds=0.3)
    runtime = Runtime(settings=settings)
    runtime.migrate()
    with runtime.engine.begin() as conn:
        for doc in WORKFLOWS:
            workflow_repo.save_version(conn, validate_document(doc), author="tests")
    metrics.reset_for_tests(Path(settings.metrics_dir))
    metrics.configure_metrics(settings)
    yield runtime
    metrics.reset_for_tests(None, wipe=False)
    runtime.close()


def _submit(rt: Runtime, tmp_path: Path, code: str, n: int, tag: str) -> list[int]:
    src = tmp_path / "input.txt"
    src.write_text("hello mediamill\n")
    ids = []
    for i in range(n):
        job_input = store_input_file(rt.storage, src, filename=f"{tag}-{i}.txt")
        ids.append(submit_job(rt.engine, SubmitRequest(job_input=job_input, workflow_code=code,
                                                       request_id=f"req-{tag}-{i}")).id)
    return ids


def _finished(rt: Runtime, ids: list[int]) -> bool:
    with rt.engine.connect() as conn:
        statuses = conn.execute(sa.select(t.workflow_jobs.c.status).where(t.workflow_jobs.c.id.in_(ids))).scalars()
        return all(s in ("completed", "failed", "partial") for s in statuses)


def _alert_events(rt: Runtime) -> list[str]:
    wn = t.workflow_notifications
    with rt.engine.connect() as conn:
        return list(conn.execute(sa.select(wn.c.event_type).where(wn.c.channel.is_(None),
                                                                   wn.c.event_type.like("alert.%"))
                                 .order_by(wn.c.id)).scalars())


def test_jobs_webhooks_alerts_and_metrics(rt: Runtime, tmp_path: Path, receiver: Receiver) -> None:
    with rt.engine.begin() as conn:
        channel = ch.create_channel(conn, tenant_id="default", kind="webhook", config={"url": receiver.url},
                                    allowlist=rt.settings.url_allowlist, box=rt.secret_box)
    secret = channel["config"]["secrets"][0]["secret"]
    worker = Worker(rt, pools={"e2e": 4}).start()
    notifier = Notifier(engine=rt.engine, settings=rt.settings).start()
    try:
        single = _submit(rt, tmp_path, "WF-E2E-FAIL", 1, "single")
        wait_until(lambda: _finished(rt, single), timeout=30, message="the single failure")
        time.sleep(6)  # longer than `for`: a lone failure (below min_samples) must not even go pending
        assert _alert_events(rt) == []

        failing = _submit(rt, tmp_path, "WF-E2E-FAIL", 5, "burst")
        wait_until(lambda: _finished(rt, failing), timeout=30, message="the failure burst")
        wait_until(lambda: _alert_events(rt) == ["alert.firing"], timeout=20, message="the alert firing")

        ok = _submit(rt, tmp_path, "WF-E2E-OK", 12, "ok")
        wait_until(lambda: _finished(rt, ok), timeout=60, message="the successful jobs")
        wait_until(lambda: _alert_events(rt) == ["alert.firing", "alert.resolved"], timeout=20,
                   message="the alert resolving")
        all_jobs = single + failing + ok
        wait_until(lambda: {r.json()["data"].get("job_id") for r in receiver.requests} >= set(all_jobs)
                   and {"alert.firing", "alert.resolved"} <= {r.json()["type"] for r in receiver.requests},
                   timeout=30, message="a webhook per job and per alert change")
    finally:
        notifier.stop()
        worker.stop(grace=5)

    assert _alert_events(rt) == ["alert.firing", "alert.resolved"]  # once each, not per evaluation
    by_type: dict[str, list[dict]] = {}
    for req in receiver.requests:
        body = Webhook(secret).verify(req.body, req.headers)
        by_type.setdefault(body["type"], []).append(body)
    assert len(by_type["job.failed"]) == 6 and len(by_type["job.completed"]) == 12
    assert [b["data"]["state"] for b in by_type["alert.firing"] + by_type["alert.resolved"]] == ["firing", "resolved"]
    assert {b["data"]["request_id"] for b in by_type["job.failed"]} >= {"req-single-0", "req-burst-0"}

    _assert_metrics_match_database(rt)


def _assert_metrics_match_database(rt: Runtime) -> None:
    wj, wd = t.workflow_jobs, t.workflow_definitions
    with rt.engine.connect() as conn:
        counts = {(code, status): n for code, status, n in conn.execute(
            sa.select(wd.c.workflow_code, wj.c.status, sa.func.count())
            .select_from(wj.join(wd, wd.c.id == wj.c.workflow_id)).group_by(wd.c.workflow_code, wj.c.status))}
    text = metrics.render(rt.engine)[0].decode()
    finished = {(s.labels["workflow"], s.labels["status"]): s.value
                for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "mediamill_jobs_finished_total"}
    submitted = {s.labels["workflow"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "mediamill_jobs_submitted_total"}
    assert finished == {k: float(v) for k, v in counts.items()}
    assert submitted == {"WF-E2E-FAIL": 6.0, "WF-E2E-OK": 12.0}
