"""The delivery log: outbox events and their deliveries, newest first, with keyset pagination."""

from __future__ import annotations

from typing import Any

from mediamill.errors import NotFound
from mediamill.store import notify_repo
from mediamill.store.db import Connection
from mediamill.store.timeutil import iso


def list_notifications(conn: Connection, *, tenant_id: str | None, status: str | None = None,
                       event_type: str | None = None, job_id: int | None = None, channel_id: int | None = None,
                       event_id: str | None = None, include_events: bool = False, before_id: int | None = None,
                       limit: int = 50) -> list[dict[str, Any]]:
    """Deliveries (and, with ``include_events``, the outbox event rows) matching the filters."""
    equal = {"tenant_id": tenant_id, "status": status, "event_type": event_type, "job_id": job_id,
             "channel_id": channel_id, "event_id": event_id}
    rows = notify_repo.find_notifications(conn, equal=equal, include_events=include_events, before_id=before_id,
                                          limit=max(1, min(limit, 500)))
    return [notification_view(r) for r in rows]


def notification_row(conn: Connection, notification_id: int, *, tenant_id: str | None) -> dict[str, Any]:
    """The raw row of one notification in the tenant (NotFound otherwise)."""
    row = notify_repo.notification_by_id(conn, notification_id, tenant_id=tenant_id)
    if row is None:
        raise NotFound(f"notification {notification_id} not found")
    return row


def get_notification(conn: Connection, notification_id: int, *, tenant_id: str | None) -> dict[str, Any]:
    """One row with its payload and full attempt log."""
    return notification_view(notification_row(conn, notification_id, tenant_id=tenant_id), detail=True)


def notification_view(row: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """A row for the API / CLI (payload and attempt log only in detail)."""
    view = {"id": row["id"], "kind": "event" if row["channel"] is None else "delivery",
            "event_id": row["event_id"], "event_type": row["event_type"], "job_id": row["job_id"],
            "tenant_id": row["tenant_id"], "channel": row["channel"], "channel_id": row["channel_id"],
            "recipient": row["recipient"], "subject": row["subject"], "status": row["status"],
            "attempts": row["attempts"], "error_message": row["error_message"],
            "created_at": iso(row["created_at"]), "sent_at": iso(row["sent_at"]),
            "next_attempt_at": iso(row["next_attempt_at"]) if row["status"] == "pending" else None}
    if detail:
        view.update(message=row["message"], payload=row["payload"], attempt_log=row["attempt_log"] or [])
    return view
