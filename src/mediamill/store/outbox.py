"""The notification outbox: events written in the same transaction as the state change they report.

The engine writes one *event row* into ``workflow_notifications`` per event (``channel`` NULL,
``status`` 'pending'). The notifier's dispatcher expands an event row into one *delivery row*
per matching channel (same ``event_id``), then delivers those at least once.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.engine import Connection

from mediamill.store.bulk import insert_many
from mediamill.store.tables import workflow_notifications as wn
from mediamill.store.timeutil import utcnow

#: Event types the system emits (documented with JSON Schema by the notifier).
EVENT_TYPES = (
    "job.completed", "job.partial", "job.failed", "job.cancelled", "job.dead_lettered",
    "breaker.opened", "breaker.closed", "alert.firing", "alert.resolved", "rollout.aborted", "rollout.promoted",
    "source.file_skipped", "test",
)

_LEGACY_TYPE = {"job.completed": "completion", "job.partial": "completion", "job.failed": "failure",
                "job.cancelled": "cancellation", "job.dead_lettered": "failure"}


def event_row(*, event_type: str, tenant_id: str, payload: dict[str, Any], job_id: int | None = None,
              subject: str | None = None, message: str | None = None) -> dict[str, Any]:
    """The values of one pending event row (for callers that insert many at once)."""
    event_id = "evt_" + os.urandom(16).hex()  # random like a uuid4, at a fraction of the cost
    now = utcnow()
    return {
        "job_id": job_id, "tenant_id": tenant_id, "event_id": event_id, "event_type": event_type,
        "notification_type": _LEGACY_TYPE.get(event_type, event_type.split(".")[0]), "subject": subject,
        "message": message, "status": "pending", "created_at": now, "next_attempt_at": now, "attempts": 0,
        "payload": {"type": event_type, "id": event_id, "timestamp": now.isoformat() + "Z", "data": payload},
    }


def add_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    insert_many(conn, wn, rows)


def add_event(conn: Connection, *, event_type: str, tenant_id: str, payload: dict[str, Any],
              job_id: int | None = None, subject: str | None = None, message: str | None = None) -> str:
    """Write one pending event row; returns its stable event id."""
    row = event_row(event_type=event_type, tenant_id=tenant_id, payload=payload, job_id=job_id, subject=subject,
                    message=message)
    conn.execute(wn.insert().values(**row))
    return str(row["event_id"])
