"""ASGI middleware counting HTTP requests by method, route template and status."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mediamill.observability import metrics

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Label for requests that matched no route (keeps scanners from inflating label cardinality).
UNMATCHED = "unmatched"


class HttpMetricsMiddleware:
    """Records ``mediamill_http_requests_total`` and the request duration histogram.

    The route label is the template the router matched (``/v1/jobs/{job_id}``), never the raw
    path, so the number of series stays bounded.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def capture(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            metrics.http_request(scope.get("method", "GET"), route_template(scope), status[0],
                                 time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The path template of the route that handled ``scope`` (Starlette stores it in the scope)."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not path:
        return UNMATCHED
    return str(scope.get("root_path", "")) + str(path)
