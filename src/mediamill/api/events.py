"""The progress stream: job_events → Server-Sent Events.

One ``EventHub`` per process reads new ``job_events`` rows (``id > last``, an index range on
the primary key) and fans them out to every subscriber, so a thousand open streams cost one
query per tick, not a thousand. On PostgreSQL a LISTEN connection wakes the hub as soon as
the engine NOTIFYs; the tick (``sse_poll_seconds``) is the fallback that also covers events
written by other processes on SQLite.

A subscriber first registers (so nothing is missed), then catches up from the database after
its ``Last-Event-ID``, then receives live events, skipping any id it has already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from mediamill.statuses import TERMINAL_JOB
from mediamill.store import events_repo
from mediamill.store.db import Engine, listen_available
from mediamill.store.timeutil import iso

EVENT_CHANNEL = "mediamill_events"
BATCH = 2000
RETRY_MS = 2000  # how soon a client reconnects (with Last-Event-ID)


def event_dict(row: Any) -> dict[str, Any]:
    data = row["data"]
    if isinstance(data, str):
        with contextlib.suppress(ValueError):
            data = json.loads(data)
    return {"id": int(row["id"]), "job_id": row["job_id"], "tenant_id": row["tenant_id"],
            "type": row["event_type"], "step": row["step_name"], "data": data or {},
            "at": iso(row["created_at"])}


def is_final(event: dict[str, Any]) -> bool:
    return event["type"] == "status" and (event["data"] or {}).get("status") in TERMINAL_JOB


def read_events(engine: Engine, *, after_id: int, job_id: int | None = None, tenant_id: str | None = None,
                limit: int = BATCH) -> list[dict[str, Any]]:
    """Events after ``after_id`` (of one job, of a tenant, or all), oldest first."""
    with engine.connect() as conn:
        rows = events_repo.after(conn, after_id, job_id=job_id, tenant_id=tenant_id, limit=limit)
    return [event_dict(r) for r in rows]


def last_event_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return events_repo.last_id(conn)


def job_status(engine: Engine, job_id: int) -> str | None:
    with engine.connect() as conn:
        return events_repo.job_status(conn, job_id)


@dataclass(eq=False)
class Subscription:
    tenant_id: str
    job_id: int | None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    overflowed: bool = False

    def offer(self, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True  # the stream closes; the client resumes with Last-Event-ID


class EventHub:
    """Reads job_events once per tick and dispatches to subscriptions of this process."""

    def __init__(self, engine: Engine, *, poll_seconds: float = 0.1) -> None:
        self.engine = engine
        self.poll_seconds = poll_seconds
        self._by_job: dict[int, set[Subscription]] = {}
        self._by_tenant: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_id = 0

    async def subscribe(self, *, tenant_id: str, job_id: int | None) -> Subscription:
        await self._ensure_running()
        sub = Subscription(tenant_id, job_id)
        if job_id is not None:
            self._by_job.setdefault(job_id, set()).add(sub)
        else:
            self._by_tenant.setdefault(tenant_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        group = self._by_job.get(sub.job_id) if sub.job_id is not None else self._by_tenant.get(sub.tenant_id)
        if group is not None:
            group.discard(sub)
            if not group:
                if sub.job_id is not None:
                    self._by_job.pop(sub.job_id, None)
                else:
                    self._by_tenant.pop(sub.tenant_id, None)

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._by_job.values()) + sum(len(s) for s in self._by_tenant.values())

    async def _ensure_running(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self.last_id = await asyncio.to_thread(last_event_id, self.engine)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="mediamill-event-hub")
        if listen_available(self.engine) and self._listener is None:  # (not behind PgBouncer: the tick polls)
            self._start_listener(asyncio.get_running_loop())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if self.subscribers:
                with contextlib.suppress(Exception):  # a database hiccup must not end the streams
                    await self._tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()

    async def _tick(self) -> None:
        while True:
            events = await asyncio.to_thread(read_events, self.engine, after_id=self.last_id)
            for event in events:
                self._dispatch(event)
                self.last_id = event["id"]
            if len(events) < BATCH:
                return

    def _dispatch(self, event: dict[str, Any]) -> None:
        event["frame"] = sse_frame(event)  # rendered once, written to every subscriber
        for sub in self._by_job.get(event["job_id"], ()):
            if sub.tenant_id == event["tenant_id"]:
                sub.offer(event)
        for sub in self._by_tenant.get(event["tenant_id"], ()):
            sub.offer(event)

    def _start_listener(self, loop: asyncio.AbstractEventLoop) -> None:
        """A thread LISTENing on PostgreSQL; each NOTIFY wakes the hub (best effort)."""

        def listen() -> None:
            with contextlib.suppress(Exception):
                raw = self.engine.raw_connection()
                try:
                    pg: Any = raw.driver_connection
                    pg.autocommit = True
                    pg.execute(f"LISTEN {EVENT_CHANNEL}")
                    pg.execute("LISTEN mediamill_jobs")
                    while not self._stop.is_set():
                        for _n in pg.notifies(timeout=1.0):
                            loop.call_soon_threadsafe(self._poke)
                finally:
                    raw.close()

        self._listener = threading.Thread(target=listen, name="mediamill-event-listen", daemon=True)
        self._listener.start()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def sse_frame(event: dict[str, Any]) -> bytes:
    """One SSE message: ``id``, ``event`` (progress | step | status | …) and JSON ``data``."""
    payload = {k: event[k] for k in ("job_id", "type", "step", "data", "at")}
    return (f"id: {event['id']}\nevent: {event['type']}\nretry: {RETRY_MS}\n"
            f"data: {json.dumps(payload, default=str)}\n\n").encode()


async def stream(hub: EventHub, *, tenant_id: str, job_id: int | None, after_id: int,
                 keepalive: float = 15.0) -> AsyncIterator[bytes]:
    """The SSE body for one job (closing after its final status) or for a whole tenant."""
    sub = await hub.subscribe(tenant_id=tenant_id, job_id=job_id)
    try:
        # a comment opens the stream at once (headers flushed) without dispatching an event
        yield b": stream open\n\n"
        sent = after_id
        backlog = [] if after_id >= hub.last_id else await asyncio.to_thread(
            read_events, hub.engine, after_id=after_id, job_id=job_id, tenant_id=tenant_id, limit=100_000)
        for event in backlog:
            sent = event["id"]
            yield sse_frame(event)
            if job_id is not None and is_final(event):
                return
        if job_id is not None and await asyncio.to_thread(job_status, hub.engine, job_id) in TERMINAL_JOB:
            return  # finished before this stream began and its final event was already delivered
        async for batch in _live(sub, keepalive):
            if not batch:
                yield b": keep-alive\n\n"
                continue
            frames, sent, final = _frames(batch, sent, job_id)
            if frames:
                yield frames  # everything that queued up goes out in one write
            if final:
                return
    finally:
        hub.unsubscribe(sub)


def _frames(batch: list[dict[str, Any]], sent: int, job_id: int | None) -> tuple[bytes, int, bool]:
    """The frames of events newer than ``sent`` (up to a job's final one), the new last id, finality."""
    out: list[bytes] = []
    for event in batch:
        if event["id"] <= sent:
            continue
        sent = event["id"]
        out.append(event.get("frame") or sse_frame(event))
        if job_id is not None and is_final(event):
            return b"".join(out), sent, True
    return b"".join(out), sent, False


async def _live(sub: Subscription, keepalive: float) -> AsyncIterator[list[dict[str, Any]]]:
    """Batches of live events (an empty batch when ``keepalive`` passed in silence)."""
    while not sub.overflowed:
        try:
            async with asyncio.timeout(keepalive):  # no task per wait, unlike wait_for
                first = await sub.queue.get()
        except TimeoutError:
            yield []
            continue
        batch = [first]
        while not sub.queue.empty():
            batch.append(sub.queue.get_nowait())
        yield batch
