"""Waking idle workers: PostgreSQL LISTEN/NOTIFY across processes; with SQLite (one machine by nature) an
in-process signal plus a datagram to each worker's UNIX socket next to the database file.

Both keep a polling fallback (workers wait with a timeout), so a lost wake-up only costs
one poll interval.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from mediamill.store.db import Connection, Engine
from mediamill.store.wake_signal import notify_at_commit

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
    notify_at_commit(conn, channel, queues)


def after_commit(queues: Iterable[str], engine: Engine | None = None) -> None:
    """Wake workers of this process, and on SQLite the worker processes beside the same database file."""
    queues = list(queues)
    notify_local(queues)
    if engine is not None and engine.dialect.name == "sqlite" and queues:
        broadcast_sqlite(engine)


def socket_dir(engine: Engine) -> Path | None:
    """Where workers of a SQLite database listen: a folder beside the database file."""
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve().parent / ".mediamill-wake"


def broadcast_sqlite(engine: Engine) -> None:
    folder = socket_dir(engine)
    if folder is None or not folder.is_dir():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for path in folder.glob("*.sock"):
            try:
                sock.sendto(b"w", str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    path.unlink()  # a worker that died without cleaning up
            except OSError:
                continue  # a full buffer means it is awake already


class SqliteWakeListener:
    """A worker's datagram socket: any datagram means "look at the queue now"."""

    def __init__(self, engine: Engine, name: str, on_wake: Callable[[], None]) -> None:
        folder = socket_dir(engine)
        self.path = folder / f"{name}.sock" if folder else None
        self.on_wake = on_wake
        self._sock: socket.socket | None = None

    def start(self) -> None:
        if self.path is None or len(str(self.path)) > 100:  # AF_UNIX paths are short; polling still works
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.5)
        threading.Thread(target=self._loop, name="mm-wake", daemon=True).start()

    def _loop(self) -> None:
        sock = self._sock
        while sock is not None and sock.fileno() >= 0:
            try:
                sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            self.on_wake()

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
