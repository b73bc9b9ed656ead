"""Time in the store: naive UTC datetimes (the core tables' ``TIMESTAMP`` columns have no time zone)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """ISO-8601 with a Z, for JSON."""
    return value.isoformat(timespec="milliseconds") + "Z" if value else None
