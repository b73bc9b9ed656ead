"""Notifications and alerts: outbox dispatcher, channels (webhook, email, Slack), alert rules.

``Notifier`` is what ``serve`` and ``mediamill notifier`` run; the other modules are its parts:
``dispatcher`` (SQL of expansion, claiming, outcomes), ``delivery`` (the sending loop),
``channels``, ``senders``, ``render``, ``events`` (types and JSON Schemas), ``alert_rules``,
``alerting``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mediamill.notify.runner import Notifier

__all__ = ["Notifier"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing mediamill.notify.events (e.g. from the engine) does not load httpx & co.
    if name == "Notifier":
        from mediamill.notify.runner import Notifier

        return Notifier
    raise AttributeError(name)
