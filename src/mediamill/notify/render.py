"""Human-readable forms of an event: email subject + plain text + HTML, and Slack Block Kit.

Subjects name the workflow's kind and the outcome: "Video Processing Complete", "Processing Failed".
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

_STATUS_EMOJI = {"completed": ":white_check_mark:", "partial": ":warning:", "failed": ":x:",
                 "cancelled": ":no_entry_sign:", "dead_lettered": ":skull:"}
_TYPE_NOUN = {"video": "video", "image": "image", "audio": "audio file", "document": "document"}


@dataclass(frozen=True)
class EventContext:
    """Facts about an event that are not in its payload (looked up when the event is expanded)."""

    workflow_type: str | None = None
    input_filename: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str


def _data(envelope: dict[str, Any]) -> dict[str, Any]:
    return envelope.get("data") or {}


def format_duration(seconds: float | None) -> str:
    """``83.4`` → ``1m 23s``."""
    if seconds is None:
        return "—"
    total = round(float(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{float(seconds):.1f}s"


def subject(envelope: dict[str, Any], ctx: EventContext) -> str:
    """The subject line of an event (email subject, Slack header)."""
    kind, data = envelope.get("type", ""), _data(envelope)
    label = (ctx.workflow_type or "").capitalize() or "Media"
    if kind == "job.completed":
        return f"{label} Processing Complete"
    if kind == "job.partial":
        return f"{label} Processing Partially Complete"
    if kind in ("job.failed", "job.dead_lettered"):
        return "Processing Failed"
    if kind == "job.cancelled":
        return "Processing Cancelled"
    if kind.startswith("breaker."):
        state = "opened" if kind == "breaker.opened" else "closed"
        return f"Circuit breaker {state}: {data.get('action', '?')}"
    if kind.startswith("alert."):
        tag = f"FIRING {data.get('severity', '')}".strip() if kind == "alert.firing" else "RESOLVED"
        return f"[{tag}] {data.get('rule', 'alert')}: {data.get('summary', '')}".rstrip(": ")
    if kind == "rollout.aborted":
        return f"Rollout aborted: {data.get('workflow_code', '?')} v{data.get('version', '?')}"
    if kind == "rollout.promoted":
        return f"Rollout promoted: {data.get('workflow_code', '?')} v{data.get('version', '?')}"
    if kind == "source.file_skipped":
        return f"Source {data.get('source', '?')} skipped a file: {data.get('path', '?')}"
    if kind == "test":
        return "mediamill test notification"
    return str(kind)


def summary_line(envelope: dict[str, Any], ctx: EventContext) -> str:
    """One sentence a person reads first: "Your video video1.mp4 has been processed successfully."."""
    kind, data = envelope.get("type", ""), _data(envelope)
    noun = _TYPE_NOUN.get(ctx.workflow_type or "", "file")
    name = ctx.input_filename or data.get("job_code") or "job"
    error = data.get("error_message") or data.get("error_class") or "unknown error"
    if kind == "job.completed":
        return f"Your {noun} {name} has been processed successfully."
    if kind == "job.partial":
        return f"Your {noun} {name} was processed, but some steps failed: {error}"
    if kind == "job.failed":
        return f"{noun.capitalize()} processing failed: {error}"
    if kind == "job.dead_lettered":
        return f"{noun.capitalize()} processing failed and was moved to the dead-letter queue: {error}"
    if kind == "job.cancelled":
        return f"Processing of your {noun} {name} was cancelled."
    if kind.startswith("breaker."):
        return (f"The circuit breaker of action {data.get('action')} is now {data.get('state')}. "
                f"{data.get('last_error') or ''}").strip()
    if kind.startswith("alert."):
        return str(data.get("summary") or data.get("rule") or "alert")
    if kind == "rollout.aborted":
        return f"The staged rollout of {data.get('workflow_code')} v{data.get('version')} was aborted: " \
               f"{data.get('reason') or 'by request'}"
    if kind == "rollout.promoted":
        return f"Version {data.get('version')} of {data.get('workflow_code')} is now active for every new job."
    if kind == "source.file_skipped":
        return (f"Source {data.get('source')} skipped {data.get('path')} ({data.get('reason')}): "
                f"{data.get('error') or ''}").strip()
    if kind == "test":
        return "This is a test notification from mediamill: the channel works."
    return str(kind)


def _facts(envelope: dict[str, Any], ctx: EventContext) -> list[tuple[str, str]]:
    data = _data(envelope)
    if envelope.get("type", "").startswith("job."):
        version = data.get("workflow_version")
        facts = [("Job", str(data.get("job_code") or data.get("job_id"))),
                 ("Workflow", f"{data.get('workflow_code')}" + (f" v{version}" if version else "")),
                 ("Status", str(data.get("status"))),
                 ("Duration", format_duration(data.get("duration_seconds")))]
        if data.get("error_class"):
            facts.append(("Error", f"{data.get('error_class')}: {data.get('error_message') or ''}"))
        for out in data.get("outputs") or []:
            where = f" {out['url']}" if out.get("url") else ""
            facts.append(("Output", f"{out.get('name')} ({out.get('mime_type')}, {out.get('bytes')} bytes){where}"))
        return facts
    if envelope.get("type", "").startswith("alert."):
        facts = [("Rule", str(data.get("rule"))), ("Severity", str(data.get("severity"))),
                 ("Value", str(data.get("value"))), ("Threshold", str(data.get("threshold")))]
        facts += [(k, str(v)) for k, v in (data.get("labels") or {}).items()]
        if data.get("runbook"):
            facts.append(("Runbook", str(data["runbook"])))
        return facts
    return [(str(k), str(v)) for k, v in data.items() if v is not None and not isinstance(v, dict | list)]


def email_message(envelope: dict[str, Any], ctx: EventContext) -> Message:
    """Subject, plain-text and HTML bodies of an event email."""
    subj = subject(envelope, ctx)
    line = summary_line(envelope, ctx)
    facts = _facts(envelope, ctx)
    text_lines = [line, "", *[f"{k}: {v}" for k, v in facts]]
    if ctx.link:
        text_lines += ["", f"Details: {ctx.link}"]
    text_lines += ["", f"Event {envelope.get('id')} ({envelope.get('type')}) at {envelope.get('timestamp')}"]
    rows = "".join(f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    link = f"<p><a href='{html.escape(ctx.link)}'>View details</a></p>" if ctx.link else ""
    body = (f"<html><body><h2>{html.escape(subj)}</h2><p>{html.escape(line)}</p>"
            f"<table>{rows}</table>{link}<p style='color:#888'>Event {html.escape(str(envelope.get('id')))}"
            f"</p></body></html>")
    return Message(subject=subj, text="\n".join(text_lines) + "\n", html=body)


def slack_message(envelope: dict[str, Any], ctx: EventContext, *, channel: str | None = None) -> dict[str, Any]:
    """An incoming-webhook message in Block Kit form, with a plain ``text`` fallback."""
    data = _data(envelope)
    status = str(data.get("status") or data.get("state") or "")
    emoji = _STATUS_EMOJI.get(status, ":bell:")
    subj = subject(envelope, ctx)
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in _facts(envelope, ctx)[:10]]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": subj[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} {summary_line(envelope, ctx)}"}},
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    if ctx.link:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "View details"}, "url": ctx.link}]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"{envelope.get('type')} · {envelope.get('id')}"}]})
    message: dict[str, Any] = {"text": f"{subj}: {summary_line(envelope, ctx)}", "blocks": blocks}
    if channel:
        message["channel"] = channel
    return message
