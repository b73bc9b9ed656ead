"""The dispatcher: outbox event rows → one delivery row per target → delivered at least once.

Life of a notification (all in ``workflow_notifications``):

1. The engine writes an *event row* (``channel`` NULL, ``status`` pending) in the transaction
   that changed the job.
2. :func:`expand_events` turns it into *delivery rows* — one per matching channel (and per
   email recipient, and per ``notify`` target given with the job) — with the same ``event_id``,
   and marks the event row ``dispatched``; in one transaction, so an event is expanded once.
3. :func:`claim_deliveries` takes due rows for one dispatcher: a short transaction sets
   ``locked_by``/``locked_until`` and counts the attempt (PostgreSQL skips rows another
   dispatcher is claiming with ``FOR UPDATE SKIP LOCKED``; SQLite serialises on ``BEGIN
   IMMEDIATE``). A dispatcher killed mid-delivery leaves the row pending; the lock expires and
   another dispatcher (or the restarted one) sends it — at least once.
4. :func:`record_result` writes the attempt to ``attempt_log`` and moves the row to ``sent``,
   back to ``pending`` with exponential back-off and jitter, or to ``failed`` (too many
   attempts, too old, or a permanent refusal). HTTP 410 disables the channel.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from mediamill.config import Settings
from mediamill.errors import InvalidInput
from mediamill.notify import channels as ch
from mediamill.notify.events import JOB_EVENTS
from mediamill.notify.history import notification_row
from mediamill.notify.render import EventContext, email_message, subject, summary_line
from mediamill.notify.senders import SendResult
from mediamill.store import notify_repo as repo
from mediamill.store.db import Connection
from mediamill.store.timeutil import iso, utcnow

#: Events a per-job ``notify.email`` receives (dead-lettering follows a failure: one email is enough).
JOB_EMAIL_EVENTS = ("job.completed", "job.partial", "job.failed", "job.cancelled")
ATTEMPT_LOG_LIMIT = 50


@dataclass
class Target:
    """Where one delivery goes."""

    kind: str
    recipient: str
    channel_id: int | None = None


@dataclass
class Claimed:
    """A delivery row claimed by this dispatcher, with what sending it needs."""

    id: int
    event_id: str
    event_type: str
    kind: str
    recipient: str
    tenant_id: str
    job_id: int | None
    channel_id: int | None
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    config: dict[str, Any] | None
    channel_enabled: bool | None
    context: EventContext = field(default_factory=EventContext)
    request_id: str | None = None


# --------------------------------------------------------------------------- expansion
def expand_events(conn: Connection, settings: Settings, *, limit: int = 100) -> int:
    """Expand pending event rows into delivery rows (run inside a transaction). Returns events expanded."""
    events = repo.take_pending_events(conn, limit=limit)
    now = utcnow()
    channels = _ChannelLookups(conn)
    unmatched: list[int] = []
    for event in events:
        event["payload"] = with_download_urls(event["payload"], settings)
        targets = targets_for(conn, event, channels)
        if not targets:  # the common case without channels: no rendering, one update for all of them below
            unmatched.append(event["id"])
            continue
        ctx = event_context(conn, event, settings)
        rows = [_delivery_row(event, t, ctx, now) for t in targets]
        repo.add_deliveries(conn, rows)
        repo.mark_expanded(conn, [event["id"]], now=now, deliveries=len(rows))
    if unmatched:
        repo.mark_expanded(conn, unmatched, now=now, deliveries=0)
    return len(events)


class _ChannelLookups:
    """Matching channels read once per (tenant, event type, workflow) within one expansion: a burst of job
    events of one workflow asks the same question for each."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.found: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}

    def matching(self, *, tenant_id: str, event_type: str, workflow_code: str | None) -> list[dict[str, Any]]:
        key = (tenant_id, event_type, workflow_code)
        if key not in self.found:
            self.found[key] = ch.matching_channels(self.conn, tenant_id=tenant_id, event_type=event_type,
                                                   workflow_code=workflow_code)
        return self.found[key]


def api_base(settings: Settings) -> str:
    """Where receivers reach the API: ``MEDIAMILL_PUBLIC_URL``, else the address ``serve`` listens on."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}"


def with_download_urls(envelope: dict[str, Any] | None, settings: Settings) -> dict[str, Any]:
    """A job event's envelope whose outputs each carry ``url``: the API download of that output
    (``GET /v1/jobs/{id}/outputs/{name}``, with an API key of the job's tenant)."""
    envelope = dict(envelope or {})
    data = envelope.get("data")
    if not isinstance(data, dict) or not data.get("outputs") or data.get("job_id") is None:
        return envelope
    root = f"{api_base(settings)}/v1/jobs/{data['job_id']}/outputs"
    outputs = [{**o, "url": f"{root}/{quote(str(o['name']), safe='/')}"} if isinstance(o, dict) and o.get("name")
               else o for o in data["outputs"]]
    envelope["data"] = {**data, "outputs": outputs}
    return envelope


def targets_for(conn: Connection, event: dict[str, Any], channels: _ChannelLookups | None = None) -> list[Target]:
    """Every delivery an event causes: matching channels, then the job's own ``notify``."""
    envelope = event["payload"] or {}
    data = envelope.get("data") or {}
    out: list[Target] = []
    lookups = channels or _ChannelLookups(conn)
    for channel in lookups.matching(tenant_id=event["tenant_id"] or "default", event_type=event["event_type"],
                                    workflow_code=data.get("workflow_code")):
        out.extend(_channel_targets(channel))
    notify = data.get("notify") if event["event_type"] in JOB_EVENTS else None
    if isinstance(notify, dict):
        if notify.get("webhook"):
            out.append(Target("webhook", str(notify["webhook"])))
        if notify.get("email") and event["event_type"] in JOB_EMAIL_EVENTS:
            out.append(Target("email", str(notify["email"])))
    return out


def _channel_targets(channel: dict[str, Any]) -> list[Target]:
    config = channel["config"] or {}
    if channel["kind"] == "email":
        return [Target("email", addr, channel["id"]) for addr in config.get("to", [])]
    if channel["kind"] == "slack":
        return [Target("slack", config.get("channel") or "slack", channel["id"])]
    return [Target(channel["kind"], str(config.get("url", "")), channel["id"])]


def event_context(conn: Connection, event: dict[str, Any], settings: Settings) -> EventContext:
    """Facts for rendering: the workflow's type, the input's file name, a link to the job."""
    if event.get("job_id") is None:
        base = settings.public_url.rstrip("/")
        return EventContext(link=f"{base}/alerts" if base and event["event_type"].startswith("alert.") else None)
    row = repo.job_facts(conn, event["job_id"])
    if row is None:
        return EventContext()
    base = settings.public_url.rstrip("/")
    return EventContext(workflow_type=row.workflow_type, input_filename=row.input_filename,
                        link=f"{base}/jobs/{row.job_code}" if base else None)


def _delivery_row(event: dict[str, Any], target: Target, ctx: EventContext, now: datetime) -> dict[str, Any]:
    envelope = event["payload"] or {}
    return {
        "job_id": event["job_id"], "tenant_id": event["tenant_id"], "event_id": event["event_id"],
        "event_type": event["event_type"], "notification_type": event["notification_type"],
        "channel": target.kind, "channel_id": target.channel_id, "recipient": target.recipient[:200],
        "subject": subject(envelope, ctx)[:300], "message": summary_line(envelope, ctx),
        "payload": envelope, "status": "pending", "attempts": 0, "created_at": now,
        "next_attempt_at": now, "attempt_log": [],
    }


# --------------------------------------------------------------------------- claiming
def claim_deliveries(conn: Connection, *, worker: str, limit: int, lock_seconds: float) -> list[Claimed]:
    """Lock up to ``limit`` due delivery rows for ``worker`` and count the attempt (inside a transaction)."""
    ids = repo.claim_due_deliveries(conn, worker=worker, limit=limit, lock_seconds=lock_seconds, now=utcnow())
    return load_claimed(conn, ids) if ids else []


def load_claimed(conn: Connection, ids: list[int]) -> list[Claimed]:
    """The claimed rows with their channel config and job facts."""
    return [_claimed(r) for r in repo.deliveries_with_context(conn, ids)]


def _claimed(r: dict[str, Any]) -> Claimed:
    return Claimed(
        id=r["id"], event_id=r["event_id"], event_type=r["event_type"], kind=r["channel"],
        recipient=r["recipient"] or "", tenant_id=r["tenant_id"] or "default", job_id=r["job_id"],
        channel_id=r["channel_id"], payload=r["payload"] or {}, attempts=int(r["attempts"] or 0),
        created_at=r["created_at"] or utcnow(), config=r["ch_config"],
        channel_enabled=None if r["ch_enabled"] is None else bool(r["ch_enabled"]),
        context=EventContext(workflow_type=r["workflow_type"], input_filename=r["input_filename"]),
        request_id=r["job_request_id"],
    )


# --------------------------------------------------------------------------- outcomes
def next_delay(attempts: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Back-off before attempt ``attempts + 1``: exponential, capped, with equal jitter (never ~0)."""
    ceiling = min(cap, base * (2 ** max(attempts - 1, 0)))
    return float(ceiling / 2 + (rng or random).uniform(0, ceiling / 2))


def decide(claimed: Claimed, result: SendResult, settings: Settings, *, now: datetime) -> tuple[str, str | None]:
    """The row's next status and error message after this attempt."""
    if result.ok:
        return "sent", None
    error = result.error or "delivery failed"
    if result.gone:
        return "failed", f"{error} — endpoint gone, channel disabled"
    if result.permanent or claimed.event_type == "test":
        return "failed", error
    if claimed.attempts >= settings.notify_max_attempts:
        return "failed", f"gave up after {claimed.attempts} attempts: {error}"
    if (now - claimed.created_at).total_seconds() >= settings.notify_max_age_seconds:
        return "failed", f"gave up after {settings.notify_max_age_seconds:.0f}s: {error}"
    return "pending", error


def record_result(conn: Connection, claimed: Claimed, result: SendResult, settings: Settings, *,
                  worker: str) -> str:
    """Write one attempt's outcome on the row (only if this worker still holds it). Returns the status."""
    now = utcnow()
    status, error = decide(claimed, result, settings, now=now)
    entry = {"at": iso(now), "attempt": claimed.attempts, "ok": result.ok, "status_code": result.status_code,
             "error": result.error, "duration_ms": round(result.duration_s * 1000, 1), "by": worker}
    log = [*repo.attempt_log(conn, claimed.id), entry]
    values: dict[str, Any] = {"status": status, "error_message": error, "locked_by": None, "locked_until": None,
                              "attempt_log": log[-ATTEMPT_LOG_LIMIT:]}
    if status == "sent":
        values["sent_at"] = now
    elif status == "pending":
        delay = next_delay(claimed.attempts, base=settings.notify_backoff_base_seconds,
                           cap=settings.notify_backoff_max_seconds)
        values["next_attempt_at"] = now + timedelta(seconds=max(delay, result.retry_after or 0))
    repo.update_held_delivery(conn, claimed.id, worker=worker, values=values)
    if result.gone and claimed.channel_id is not None:
        ch.disable_channel(conn, claimed.channel_id, f"endpoint answered 410 Gone at {iso(now)}")
    return status


def cancel_claimed(conn: Connection, claimed: Claimed, reason: str, *, worker: str) -> None:
    """Drop a claimed delivery whose channel is gone or disabled."""
    repo.update_held_delivery(conn, claimed.id, worker=worker, values={
        "status": "cancelled", "error_message": reason, "locked_by": None, "locked_until": None})


# --------------------------------------------------------------------------- replay / test / prune
def replay(conn: Connection, notification_id: int, *, tenant_id: str | None) -> dict[str, Any]:
    """Send a delivery again as a new row (same event id, fresh attempt budget); an event row is re-expanded."""
    row = notification_row(conn, notification_id, tenant_id=tenant_id)
    now = utcnow()
    if row["channel"] is None:
        if row["event_id"] is None:
            raise InvalidInput(f"notification {notification_id} is not an outbox event")
        repo.requeue_event(conn, notification_id, now=now)
        return {"id": notification_id, "replayed": notification_id, "mode": "event"}
    copy = {k: row[k] for k in ("job_id", "tenant_id", "event_id", "event_type", "notification_type", "channel",
                                "channel_id", "recipient", "subject", "message", "payload")}
    new_id = repo.insert_delivery(conn, {
        **copy, "status": "pending", "attempts": 0, "created_at": now, "next_attempt_at": now,
        "attempt_log": [{"at": iso(now), "replay_of": notification_id}]})
    return {"id": new_id, "replayed": notification_id, "mode": "delivery"}


def insert_test_delivery(conn: Connection, channel: dict[str, Any], *, worker: str, lock_seconds: float) -> int:
    """A ``test`` delivery to one channel, already claimed by ``worker`` (sent inline by the caller)."""
    now = utcnow()
    event_id = "evt_" + uuid.uuid4().hex
    envelope = {"type": "test", "id": event_id, "timestamp": iso(now),
                "data": {"channel_id": channel["id"], "channel_name": channel["name"],
                         "message": "This is a test notification from mediamill."}}
    target = _channel_targets(channel)[0]
    row = _delivery_row({"job_id": None, "tenant_id": channel["tenant_id"], "event_id": event_id,
                         "event_type": "test", "notification_type": "test", "payload": envelope},
                        target, EventContext(), now)
    row.update(locked_by=worker, locked_until=now + timedelta(seconds=lock_seconds), attempts=1)
    return repo.insert_delivery(conn, row)


def prune(conn: Connection, *, older_than_days: int) -> int:
    """Delete finished deliveries and dispatched events older than the retention period."""
    if older_than_days <= 0:
        return 0
    return repo.prune_finished(conn, cutoff=utcnow() - timedelta(days=older_than_days))


def email_for(claimed: Claimed) -> Any:
    """The rendered email of a claimed delivery."""
    return email_message(claimed.payload, claimed.context)
