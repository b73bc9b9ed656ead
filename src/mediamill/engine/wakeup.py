"""Waking idle workers: PostgreSQL LISTEN/NOTIFY across processes, an in-process signal for SQLite.

Both keep a polling fallback (workers wait with a timeout), so a lost wake-up only costs
one poll interval.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

CHANNEL = "mediamill_jobs"
CANCEL_CHANNEL = "mediamill_cancel"
_listeners: list[Callable[[str], None]] = []
_lock = threading.Lock()


def subscribe(fn: Callable[[str], None]) -> Callable[[], None]:
    """Call ``fn(queue_name)`` when work arrives in this process; returns an unsubscribe function."""
    with _lock:
        _listeners.append(fn)

    def unsubscribe() -> None:
        with _lock, contextlib.suppress(ValueError):
            _listeners.remove(fn)

    return unsubscribe


def notify_local(queues: Iterable[str]) -> None:
    with _lock:
        targets = list(_listeners)
    for q in set(queues):
        for fn in targets:
            fn(q)


def notify_in_tx(conn: Connection, queues: Iterable[str], channel: str = CHANNEL) -> None:
    """Queue a wake-up inside the caller's transaction (PostgreSQL delivers NOTIFY at commit)."""
    if conn.dialect.name == "postgresql":
        for q in set(queues):
            conn.execute(sa.text("SELECT pg_notify(:c, :q)"), {"c": channel, "q": q})


def after_commit(queues: Iterable[str]) -> None:
    """Wake workers of this process (SQLite and same-process PostgreSQL workers)."""
    notify_local(queues)
