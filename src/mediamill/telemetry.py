"""A tiny in-process event bus: the engine emits, observability (metrics, logs) listens.

Keeps the engine free of imports of prometheus or structlog; a handler that raises is
dropped silently so telemetry can never break job processing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

Handler = Callable[..., None]
BatchHandler = Callable[[Sequence[dict[str, Any]]], None]
_handlers: dict[str, list[Handler]] = {}
_batch_handlers: dict[str, list[BatchHandler]] = {}


def on(event: str, handler: Handler) -> None:
    """Register ``handler(**fields)`` for an event name (e.g. ``job.finished``)."""
    _handlers.setdefault(event, []).append(handler)


def on_many(event: str, handler: BatchHandler) -> None:
    """Register ``handler(rows)`` for an event name: it gets every :func:`emit_many` batch in one call (and an
    :func:`emit` as a batch of one), so a listener with a per-event cost (a metric's shared-memory write) pays it
    once per batch."""
    _batch_handlers.setdefault(event, []).append(handler)


def emit(event: str, **fields: Any) -> None:
    for handler in _handlers.get(event, ()):
        with contextlib.suppress(Exception):
            handler(**fields)
    for batch in _batch_handlers.get(event, ()):
        with contextlib.suppress(Exception):
            batch([fields])


def emit_many(event: str, rows: Sequence[dict[str, Any]]) -> None:
    """Many events of one kind at once (the outcomes a batch writer recorded)."""
    if not rows:
        return
    for batch in _batch_handlers.get(event, ()):
        with contextlib.suppress(Exception):
            batch(rows)
    for handler in _handlers.get(event, ()):
        for fields in rows:
            with contextlib.suppress(Exception):
                handler(**fields)


def clear() -> None:
    _handlers.clear()
    _batch_handlers.clear()
