"""How the HTTP app runs under uvicorn: a protocol that drops connections whose request head
does not arrive in time (slowloris), and the one place that builds the server configuration.

uvicorn times out idle keep-alive connections but not a client that sends a header byte every
few seconds. ``GuardedProtocol`` gives every request head a deadline, counted from the moment
the connection opens (or the previous response ends): a head that is not complete by then
closes the connection. Bodies have their own idle timeout (``api.limits.BodyLimitMiddleware``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

from mediamill.api.headers import CappedHttpToolsProtocol
from mediamill.config import Settings


class GuardedProtocol(CappedHttpToolsProtocol):
    """uvicorn's HTTP protocol with capped request heads (``api.headers``) plus a deadline for
    each head (``header_timeout`` seconds)."""

    header_timeout: float = 10.0
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_head_deadline(self.header_timeout)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # the next head may come after the keep-alive idle time (uvicorn closes idle connections then)
        self._arm_head_deadline(self.timeout_keep_alive + self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self, seconds: float) -> None:
        self._cancel_head_deadline()
        self._head_deadline = self.loop.call_later(seconds, self._head_deadline_passed)

    def _cancel_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_deadline_passed(self) -> None:
        self._head_deadline = None
        between_requests = self.cycle is None or self.cycle.response_complete
        if between_requests and not self.transport.is_closing():
            self.transport.close()  # no complete request head in time


def configure_protocol(settings: Settings) -> type[GuardedProtocol]:
    """Apply the settings to the protocol (per process: uvicorn's workers call this via the app factory)."""
    GuardedProtocol.header_timeout = settings.header_timeout_seconds
    return GuardedProtocol


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options every mediamill HTTP server uses (``serve``, ``api``, the tests' live server)."""
    return {"http": configure_protocol(settings), "timeout_keep_alive": settings.keepalive_timeout_seconds,
            "h11_max_incomplete_event_size": 64 * 1024}


def server_config(app: Any, *, host: str, port: int, settings: Settings, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, **{**server_options(settings), **extra})
