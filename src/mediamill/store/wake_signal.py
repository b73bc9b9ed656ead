"""Wake-up signals that travel with a transaction: PostgreSQL's ``NOTIFY``.

PostgreSQL delivers a ``pg_notify`` sent inside a transaction when it commits (and never when it
rolls back), to every session listening on the channel. SQLite has no such thing: the engine
wakes its workers another way (``engine/wakeup.py``), so here it is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def notify_at_commit(conn: Connection, channel: str, payloads: Iterable[str]) -> None:
    """``pg_notify(channel, payload)`` for each distinct payload, inside ``conn``'s transaction
    (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        for payload in set(payloads):
            conn.execute(sa.text("SELECT pg_notify(:c, :q)"), {"c": channel, "q": payload})
