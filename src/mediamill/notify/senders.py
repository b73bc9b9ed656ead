"""The three ways out: a signed webhook, an email over SMTP, a Slack incoming webhook.

A sender makes one attempt and reports a :class:`SendResult`; retrying, logging and disabling
channels is the dispatcher's business.
"""

from __future__ import annotations

import base64
import json
import os
import smtplib
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import httpx
from standardwebhooks import Webhook

from mediamill import __version__, installkey
from mediamill.config import Settings
from mediamill.errors import EVENT_MESSAGE
from mediamill.netguard import UnresolvableHost, UrlRefused
from mediamill.notify.render import Message

_BODY_SNIPPET = 300


@dataclass(frozen=True)
class SendResult:
    """The outcome of one delivery attempt."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    gone: bool = False  # the endpoint says it no longer exists (HTTP 410): disable the channel
    permanent: bool = False  # retrying cannot help (refused URL, rejected recipient)
    retry_after: float | None = None  # the receiver asked us to wait this long
    duration_s: float = 0.0


def encode_body(envelope: dict[str, Any]) -> str:
    """The exact JSON text that is signed and sent."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str)


def signature_header(secrets: list[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """``webhook-signature``: one ``v1,<sig>`` per active secret, space-separated (rotation)."""
    return " ".join(Webhook(s).sign(msg_id=msg_id, timestamp=timestamp, data=body) for s in secrets)


def job_webhook_secret(settings: Settings, tenant_id: str) -> str:
    """The secret signing per-job ``notify.webhook`` deliveries of a tenant (derived from the install key)."""
    return "whsec_" + base64.b64encode(installkey.derive(settings, f"job-webhooks:{tenant_id}")).decode()


def send_webhook(client: httpx.Client, *, url: str, secrets: list[str], envelope: dict[str, Any],
                 extra_headers: dict[str, str] | None = None) -> SendResult:
    """POST the envelope signed per Standard Webhooks; 2xx is delivered, 410 is gone."""
    body = encode_body(envelope)
    now = datetime.now(UTC)
    headers = {**(extra_headers or {}), "content-type": "application/json",
               "user-agent": f"mediamill/{__version__}", "webhook-id": str(envelope["id"]),
               "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": signature_header(secrets, str(envelope["id"]), now, body)}
    return _post(client, url, body.encode(), headers)


def send_slack(client: httpx.Client, *, url: str, message: dict[str, Any]) -> SendResult:
    """POST a Block Kit message to a Slack incoming webhook."""
    headers = {"content-type": "application/json", "user-agent": f"mediamill/{__version__}"}
    return _post(client, url, json.dumps(message).encode(), headers)


def _post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
    started = time.perf_counter()
    try:
        response = client.post(url, content=body, headers=headers)
    except UnresolvableHost as exc:
        return SendResult(False, error=exc.message, duration_s=time.perf_counter() - started)
    except UrlRefused as exc:
        return SendResult(False, error=exc.message, permanent=True, duration_s=time.perf_counter() - started)
    except httpx.HTTPError as exc:
        return SendResult(False, error=f"{type(exc).__name__}: {exc}"[:EVENT_MESSAGE],
                          duration_s=time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    code = response.status_code
    if 200 <= code < 300:
        return SendResult(True, status_code=code, duration_s=elapsed)
    snippet = response.text[:_BODY_SNIPPET].strip()
    return SendResult(False, status_code=code, error=f"HTTP {code}" + (f": {snippet}" if snippet else ""),
                      gone=code == 410, retry_after=_retry_after(response), duration_s=elapsed)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value and value.strip().isascii() and value.strip().isdigit():
        return float(value.strip())
    return None


# --------------------------------------------------------------------------- email
@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    starttls: bool
    tls: bool
    username: str | None
    password: str | None
    sender: str
    timeout: float


def smtp_target(settings: Settings, config: dict[str, Any] | None) -> SmtpTarget:
    """SMTP parameters: the channel's overrides, else the settings (passwords only from the environment)."""
    cfg = config or {}
    password_env = cfg.get("password_env")
    password = os.environ.get(password_env) if password_env else (settings.smtp_password or None)
    return SmtpTarget(
        host=cfg.get("smtp_host") or settings.smtp_host, port=int(cfg.get("smtp_port") or settings.smtp_port),
        starttls=bool(cfg["starttls"]) if cfg.get("starttls") is not None else settings.smtp_starttls,
        tls=bool(cfg["tls"]) if cfg.get("tls") is not None else settings.smtp_tls,
        username=cfg.get("username") or settings.smtp_username or None, password=password,
        sender=cfg.get("from") or settings.smtp_from, timeout=settings.notify_timeout_seconds,
    )


def build_email(target: SmtpTarget, *, to: str, message: Message, event_id: str) -> EmailMessage:
    """A multipart/alternative email (plain text + HTML)."""
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = target.sender
    mail["To"] = to
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(idstring=event_id, domain="mediamill")
    mail["X-Mediamill-Event-Id"] = event_id
    mail.set_content(message.text)
    mail.add_alternative(message.html, subtype="html")
    return mail


def send_email(target: SmtpTarget, mail: EmailMessage) -> SendResult:
    """Send over SMTP (implicit TLS, or STARTTLS, with optional auth); 5xx answers are permanent."""
    started = time.perf_counter()
    context = ssl.create_default_context()
    try:
        smtp_cls = smtplib.SMTP_SSL if target.tls else smtplib.SMTP
        kwargs: dict[str, Any] = {"timeout": target.timeout}
        if target.tls:
            kwargs["context"] = context
        with smtp_cls(target.host, target.port, **kwargs) as smtp:
            if target.starttls and not target.tls:
                smtp.starttls(context=context)
            if target.username:
                smtp.login(target.username, target.password or "")
            smtp.send_message(mail)
    except smtplib.SMTPResponseException as exc:
        detail = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return SendResult(False, status_code=exc.smtp_code, error=f"SMTP {exc.smtp_code}: {detail}"[:EVENT_MESSAGE],
                          permanent=exc.smtp_code >= 500, duration_s=time.perf_counter() - started)
    except smtplib.SMTPRecipientsRefused as exc:
        return SendResult(False, error=f"recipients refused: {exc.recipients}"[:EVENT_MESSAGE], permanent=True,
                          duration_s=time.perf_counter() - started)
    except (OSError, smtplib.SMTPException) as exc:
        return SendResult(False, error=f"{type(exc).__name__}: {exc}"[:EVENT_MESSAGE],
                          duration_s=time.perf_counter() - started)
    return SendResult(True, status_code=250, duration_s=time.perf_counter() - started)
