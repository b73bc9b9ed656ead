"""The events mediamill notifies about, and the JSON Schema of their payloads.

Every delivery carries the same envelope (the Standard Webhooks shape)::

    {"type": "job.completed", "id": "evt_…", "timestamp": "2026-…Z", "data": {…}}

``id`` is stable across retries and replays: receivers de-duplicate on it (it is also the
``webhook-id`` header).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from mediamill.store.notify_repo import EXPANDED as EXPANDED

JOB_EVENTS = ("job.completed", "job.partial", "job.failed", "job.cancelled", "job.dead_lettered")
BREAKER_EVENTS = ("breaker.opened", "breaker.closed")
ALERT_EVENTS = ("alert.firing", "alert.resolved")
ROLLOUT_EVENTS = ("rollout.aborted", "rollout.promoted")
SOURCE_EVENTS = ("source.file_skipped",)
EVENT_TYPES = (*JOB_EVENTS, *BREAKER_EVENTS, *ALERT_EVENTS, *ROLLOUT_EVENTS, *SOURCE_EVENTS)
#: Statuses of a delivery row (``workflow_notifications`` with a channel).
DELIVERY_STATUSES = ("pending", "sent", "failed", "cancelled")
#: Status of an outbox event row once it has been expanded into deliveries: ``EXPANDED`` (the store's).

_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_NUM = {"type": ["number", "null"]}

JOB_DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["job_id", "job_code", "workflow_code", "status"],
    "properties": {
        "job_id": {"type": "integer"},
        "job_code": {"type": "string"},
        "workflow_code": {"type": "string"},
        "workflow_version": {"type": ["integer", "null"]},
        "status": {"enum": ["completed", "partial", "failed", "cancelled"]},
        "priority": {"type": ["integer", "null"]},
        "submitted_by": _NULLABLE_STR,
        "error_class": _NULLABLE_STR,
        "error_message": _NULLABLE_STR,
        "started_at": _NULLABLE_STR,
        "completed_at": {**_NULLABLE_STR, "description": "when it completed (completed or partial only)"},
        "finished_at": {**_NULLABLE_STR, "description": "when it reached its terminal state (every status)"},
        "duration_seconds": _NULLABLE_NUM,
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "mime_type": _NULLABLE_STR,
                           "bytes": {"type": ["integer", "null"]},
                           "url": {"type": "string", "description": "download (GET, with an API key)"},
                           "delivered_url": {**_NULLABLE_STR, "description": "where deliver: put it"}}}},
        "metadata": {"type": ["object", "null"]},
        "notify": {"type": ["object", "null"], "properties": {
            "webhook": _NULLABLE_STR, "email": _NULLABLE_STR}},
    },
}

BREAKER_DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["action", "state"],
    "properties": {"action": {"type": "string"}, "state": {"enum": ["open", "half_open", "closed"]},
                   "failure_count": {"type": ["integer", "null"]}, "last_error": _NULLABLE_STR,
                   "opened_at": _NULLABLE_STR, "next_probe_at": _NULLABLE_STR},
}

ALERT_DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["alert_id", "rule", "severity", "state"],
    "properties": {
        "alert_id": {"type": "integer"}, "rule": {"type": "string"}, "kind": {"type": "string"},
        "severity": {"enum": ["P1", "P2", "P3"]}, "state": {"enum": ["firing", "resolved"]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "value": _NULLABLE_NUM, "threshold": _NULLABLE_NUM, "summary": {"type": "string"},
        "runbook": _NULLABLE_STR, "fired_at": _NULLABLE_STR, "resolved_at": _NULLABLE_STR,
    },
}


SOURCE_DATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["source_id", "source", "path", "reason"],
    "properties": {"source_id": {"type": "integer"}, "source": {"type": "string"}, "path": {"type": "string"},
                   "size": {"type": ["integer", "null"]}, "reason": {"enum": ["unreadable", "rejected"]},
                   "error": _NULLABLE_STR},
}


def envelope_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one event type's payload."""
    if event_type in JOB_EVENTS:
        data = JOB_DATA_SCHEMA
    elif event_type in BREAKER_EVENTS:
        data = BREAKER_DATA_SCHEMA
    elif event_type in ALERT_EVENTS:
        data = ALERT_DATA_SCHEMA
    elif event_type in SOURCE_EVENTS:
        data = SOURCE_DATA_SCHEMA
    else:
        data = {"type": "object"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": event_type,
        "type": "object",
        "required": ["type", "id", "timestamp", "data"],
        "properties": {"type": {"const": event_type}, "id": {"type": "string", "pattern": "^evt_"},
                       "timestamp": {"type": "string"}, "data": data},
    }


def event_schemas() -> dict[str, dict[str, Any]]:
    """Every event type's schema, by type (served at ``GET /v1/notifications/schemas``)."""
    return {t: envelope_schema(t) for t in (*EVENT_TYPES, "test")}


def event_matches(patterns: list[str] | None, event_type: str) -> bool:
    """Does a channel's event filter (exact names or globs like ``job.*``; None = all) accept this?"""
    if event_type == "test":
        return False  # test sends target one channel explicitly
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(event_type, p) for p in patterns)
