"""The :class:`Dispatcher`: one round = expand events, claim due deliveries, send them concurrently."""

from __future__ import annotations

import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from mediamill.config import Settings
from mediamill.errors import EVENT_MESSAGE
from mediamill.installkey import SecretBox
from mediamill.netguard import Allowlist, guarded_client
from mediamill.notify import channels as ch
from mediamill.notify import dispatcher as dp
from mediamill.notify.render import email_message, slack_message
from mediamill.notify.senders import (
    SendResult,
    build_email,
    job_webhook_secret,
    send_email,
    send_slack,
    send_webhook,
    smtp_target,
)
from mediamill.observability import metrics
from mediamill.observability.logging import bind_job, get_logger
from mediamill.store.db import Engine

log = get_logger("mediamill.notify")


def default_worker_id(prefix: str = "notifier") -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Dispatcher:
    """Delivers the outbox. Safe to run in several processes at once (rows are claimed, not shared)."""

    def __init__(self, *, engine: Engine, settings: Settings, worker_id: str | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self._allow = Allowlist.parse(settings.url_allowlist)
        self._box = SecretBox.for_settings(settings)
        self._client = guarded_client(self._allow, timeout=settings.notify_timeout_seconds,
                                      proxy=settings.outbound_proxy or None)
        self._pool = ThreadPoolExecutor(max_workers=settings.notify_concurrency,
                                        thread_name_prefix="mediamill-notify")

    def close(self) -> None:
        """Wait for deliveries in flight, then release the HTTP client."""
        self._pool.shutdown(wait=True)
        self._client.close()

    def run_once(self) -> int:
        """Expand pending events and send one batch of due deliveries; returns deliveries attempted."""
        with self.engine.begin() as conn:
            dp.expand_events(conn, self.settings, limit=self.settings.notify_batch * 2)
        with self.engine.begin() as conn:
            claimed = dp.claim_deliveries(conn, worker=self.worker_id, limit=self.settings.notify_batch,
                                          lock_seconds=self.settings.notify_lock_seconds)
        if claimed:
            list(self._pool.map(self.deliver, claimed))
        return len(claimed)

    def deliver(self, claimed: dp.Claimed) -> str:
        """Send one claimed delivery and record the outcome; returns the row's new status."""
        with bind_job(job_id=claimed.job_id, request_id=claimed.request_id, event_id=claimed.event_id):
            if self._channel_gone(claimed):
                with self.engine.begin() as conn:
                    dp.cancel_claimed(conn, claimed, "channel deleted or disabled", worker=self.worker_id)
                metrics.notification_delivered(claimed.kind, "cancelled")
                return "cancelled"
            result = self._send(claimed)
            with self.engine.begin() as conn:
                status = dp.record_result(conn, claimed, result, self.settings, worker=self.worker_id)
            self._report(claimed, result, status)
            return status

    def _channel_gone(self, claimed: dp.Claimed) -> bool:
        if claimed.channel_id is None or claimed.event_type == "test":
            return False
        return claimed.config is None or claimed.channel_enabled is False

    def _send(self, claimed: dp.Claimed) -> SendResult:
        try:
            if claimed.kind == "webhook":
                return self._send_webhook(claimed)
            if claimed.kind == "slack":
                return self._send_slack(claimed)
            if claimed.kind == "email":
                return self._send_email(claimed)
        except Exception as exc:  # a bug in one delivery must not stop the others; it is logged and retried
            log.exception("notification sender crashed", delivery_id=claimed.id)
            return SendResult(False, error=f"internal: {type(exc).__name__}: {exc}"[:EVENT_MESSAGE])
        return SendResult(False, error=f"unknown channel kind {claimed.kind!r}", permanent=True)

    def _send_webhook(self, claimed: dp.Claimed) -> SendResult:
        config = claimed.config or {}
        if claimed.channel_id is None:  # a job's own notify.webhook
            secrets = [job_webhook_secret(self.settings, claimed.tenant_id)]
            url = claimed.recipient
        else:
            secrets = ch.signing_secrets(config, self._box)
            url = config.get("url", claimed.recipient)
        return send_webhook(self._client, url=url, secrets=secrets, envelope=claimed.payload,
                            extra_headers=config.get("headers"))

    def _send_slack(self, claimed: dp.Claimed) -> SendResult:
        config = claimed.config or {}
        message = slack_message(claimed.payload, self._context(claimed), channel=config.get("channel"))
        return send_slack(self._client, url=config.get("url", ""), message=message)

    def _send_email(self, claimed: dp.Claimed) -> SendResult:
        target = smtp_target(self.settings, claimed.config)
        mail = build_email(target, to=claimed.recipient, event_id=claimed.event_id,
                           message=email_message(claimed.payload, self._context(claimed)))
        return send_email(target, mail)

    def _context(self, claimed: dp.Claimed) -> Any:
        base = self.settings.public_url.rstrip("/")
        code = (claimed.payload.get("data") or {}).get("job_code")
        return replace(claimed.context, link=f"{base}/jobs/{code}" if base and code else None)

    def _report(self, claimed: dp.Claimed, result: SendResult, status: str) -> None:
        outcome = "sent" if result.ok else ("gone" if result.gone else ("failed" if status == "failed" else "retry"))
        metrics.notification_delivered(claimed.kind, outcome, result.duration_s)
        fields = {"delivery_id": claimed.id, "channel": claimed.kind, "channel_id": claimed.channel_id,
                  "event_type": claimed.event_type, "attempt": claimed.attempts, "status_code": result.status_code}
        if result.ok:
            log.info("notification delivered", **fields)
        else:
            log.warning("notification attempt failed", outcome=outcome, error=result.error, **fields)


def send_test(engine: Engine, settings: Settings, *, tenant_id: str | None, channel_id: int) -> dict[str, Any]:
    """Send a ``test`` event to one channel now and report what happened (the log keeps the row)."""
    dispatcher = Dispatcher(engine=engine, settings=settings, worker_id=default_worker_id("test"))
    try:
        with engine.begin() as conn:
            channel = ch.get_channel(conn, tenant_id, channel_id)
            row_id = dp.insert_test_delivery(conn, channel, worker=dispatcher.worker_id,
                                             lock_seconds=settings.notify_lock_seconds)
            claimed = dp.load_claimed(conn, [row_id])[0]
        result = dispatcher._send(claimed)
        with engine.begin() as conn:
            status = dp.record_result(conn, claimed, result, settings, worker=dispatcher.worker_id)
        dispatcher._report(claimed, result, status)
    finally:
        dispatcher.close()
    return {"delivery_id": row_id, "status": status, "ok": result.ok, "status_code": result.status_code,
            "error": result.error, "duration_ms": round(result.duration_s * 1000, 1)}
