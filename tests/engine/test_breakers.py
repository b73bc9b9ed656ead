"""Circuit breakers: open on a failure rate, jobs wait instead of failing, a good probe closes."""

from __future__ import annotations

import sqlalchemy as sa

from mediamill.engine import operations as ops
from mediamill.notify import dispatcher
from mediamill.runtime import Runtime
from mediamill.store.tables import job_events, notification_channels, workflow_notifications
from tests.engine.conftest import workflow
from tests.helpers import wait_until

FINAL = ("completed", "partial", "failed", "cancelled")


def _state(rt: Runtime, action: str) -> str | None:
    rows = {b["action"]: b for b in ops.list_breakers(rt.engine)}
    return rows[action]["state"] if action in rows else None


def test_breaker_opens_holds_jobs_and_closes_after_probe(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-DOWN", [{"name": "call", "action": "fail", "params": {"error_class": "transient"}}])
    workflow(rt, "WF-UP", [{"name": "call", "action": "fail", "params": {"times": 0}}])
    workflow(rt, "WF-CORRUPT", [{"name": "call", "action": "fail", "params": {"error_class": "invalid_input"}}])
    corrupt = [submit("WF-CORRUPT") for _ in range(4)]
    w = workers({"q": 1})
    wait_until(lambda: all(ops.get_job(rt.engine, j.id)["status"] == "failed" for j in corrupt))
    assert _state(rt, "fail") is None  # invalid input is not the action's fault
    failing = [submit("WF-DOWN") for _ in range(3)]
    wait_until(lambda: all(ops.get_job(rt.engine, j.id)["status"] == "failed" for j in failing))
    wait_until(lambda: _state(rt, "fail") == "open", message="breaker opened")
    ops.pause_queue(rt.engine, "q")
    held = [submit("WF-UP") for _ in range(3)]
    w.breakers.config = w.breakers.config.__class__(**{**w.breakers.config.__dict__, "cooldown_seconds": 1})
    ops.resume_queue(rt.engine, "q")
    wait_until(lambda: any(e["event_type"] == "wait" for e in ops.get_job(rt.engine, held[0].id)["events"]),
               message="job held by the open breaker")
    assert ops.get_job(rt.engine, held[0].id)["status"] in ("queued", "processing")  # waiting, not failed
    done = wait_until(lambda: [ops.get_job(rt.engine, j.id) for j in held]
                      if all(ops.get_job(rt.engine, j.id)["status"] in FINAL for j in held) else None, timeout=30)
    assert [d["status"] for d in done] == ["completed"] * 3
    assert _state(rt, "fail") == "closed"
    with rt.engine.connect() as conn:
        states = conn.execute(sa.select(job_events.c.data).where(job_events.c.event_type == "breaker")
                              .order_by(job_events.c.id)).scalars().all()
        outbox = conn.execute(sa.select(workflow_notifications.c.event_type)
                              .where(workflow_notifications.c.event_type.like("breaker.%"))
                              .order_by(workflow_notifications.c.id)).scalars().all()
    assert [s["state"] for s in states] == ["open", "half_open", "closed"]
    assert outbox == ["breaker.opened", "breaker.closed"]


def test_operator_reset(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-DOWN", [{"name": "call", "action": "fail", "params": {"error_class": "internal"}}])
    jobs = [submit("WF-DOWN") for _ in range(3)]
    workers({"q": 1})
    wait_until(lambda: all(ops.get_job(rt.engine, j.id)["status"] == "failed" for j in jobs))
    wait_until(lambda: _state(rt, "fail") == "open")
    ops.reset_breaker(rt.engine, "fail")
    assert _state(rt, "fail") == "closed"


def test_breaker_events_reach_the_tenants_whose_jobs_wait_on_it(rt: Runtime, submit, workers) -> None:
    workflow(rt, "WF-DOWN", [{"name": "call", "action": "fail", "params": {"error_class": "transient"}}])
    workflow(rt, "WF-LATER", [{"name": "call", "action": "fail", "params": {"times": 0}}], queue="later")
    workflow(rt, "WF-OTHER", [{"name": "other", "action": "noop"}], queue="later")
    channels = {}
    with rt.engine.begin() as conn:
        for name, tenant, events in (("default-all", "default", None), ("default-jobs", "default", ["job.*"]),
                                     ("beta-all", "beta", None), ("beta-breakers", "beta", ["breaker.*"]),
                                     ("gamma-all", "gamma", None)):
            channels[name] = conn.execute(notification_channels.insert().values(
                tenant_id=tenant, kind="webhook", name=name, config={"url": f"http://127.0.0.1:9/{name}"},
                events=events, enabled=True).returning(notification_channels.c.id)).scalar_one()
    submit("WF-LATER", tenant_id="beta")  # waits (no worker serves "later") to run the action
    submit("WF-OTHER", tenant_id="gamma")  # waits too, but never runs the action
    failing = [submit("WF-DOWN") for _ in range(3)]
    workers({"q": 1})
    wait_until(lambda: all(ops.get_job(rt.engine, j.id)["status"] == "failed" for j in failing))
    wait_until(lambda: _state(rt, "fail") == "open", message="breaker opened")
    ops.reset_breaker(rt.engine, "fail")
    wn = workflow_notifications
    with rt.engine.begin() as conn:
        events = conn.execute(sa.select(wn.c.event_type, wn.c.tenant_id).where(
            wn.c.event_type.like("breaker.%"), wn.c.channel.is_(None)).order_by(wn.c.id)).all()
        while dispatcher.expand_events(conn, rt.settings):
            pass
        deliveries = conn.execute(sa.select(wn.c.event_type, wn.c.channel_id).where(
            wn.c.event_type.like("breaker.%"), wn.c.channel.is_not(None))).all()
    assert sorted(events) == [("breaker.closed", "beta"), ("breaker.closed", "default"),
                              ("breaker.opened", "beta"), ("breaker.opened", "default")]
    expected = {channels["default-all"], channels["beta-all"], channels["beta-breakers"]}
    for kind in ("breaker.opened", "breaker.closed"):
        assert {c for t, c in deliveries if t == kind} == expected
    assert len(deliveries) == 2 * len(expected)
