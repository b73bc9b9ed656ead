"""A tiny in-process event bus: the engine emits, observability (metrics, logs) listens.

Keeps the engine free of imports of prometheus or structlog; a handler that raises is
dropped silently so telemetry can never break job processing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

Handler = Callable[..., None]
_handlers: dict[str, list[Handler]] = {}


def on(event: str, handler: Handler) -> None:
    """Register ``handler(**fields)`` for an event name (e.g. ``job.finished``)."""
    _handlers.setdefault(event, []).append(handler)


def emit(event: str, **fields: Any) -> None:
    for handler in _handlers.get(event, ()):
        with contextlib.suppress(Exception):
            handler(**fields)


def clear() -> None:
    _handlers.clear()
