"""Request limits: body size (an ASGI middleware) and a per-key submit rate (a token bucket)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mediamill.api.problems import PROBLEM
from mediamill.errors import MediamillError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# multipart framing around a file: boundaries and part headers (a few KB at most)
MULTIPART_OVERHEAD = 64 * 1024


class BodyTooLarge(MediamillError):
    error_class = "too_large"
    http_status = 413
    title = "Request body too large"


class RateLimited(MediamillError):
    error_class = "rate_limited"
    http_status = 429
    title = "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"submit rate limit reached; retry in {retry_after} s")
        self.retry_after = retry_after


def _is_upload(scope: Scope) -> bool:
    path, method = scope.get("path", ""), scope.get("method", "")
    if path.startswith("/v1/uploads") and method in ("POST", "PATCH", "PUT"):
        return True
    if path == "/v1/jobs" and method == "POST":
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
        return ctype.startswith(b"multipart/")
    return False


class BodyLimitMiddleware:
    """413 for bodies over the limit: ``max_upload_bytes`` on upload routes, ``max_request_bytes``
    elsewhere. Checks Content-Length first and counts streamed bytes as a backstop."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, max_request_bytes: int,
                 max_upload_bytes: int) -> None:
        self.app = app
        self.max_request = max_request_bytes
        self.max_upload = max_upload_bytes + MULTIPART_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if _is_upload(scope) else self.max_request
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(send, limit)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"the request body is larger than {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)


async def _reject(send: Send, limit: int) -> None:
    body = (b'{"type":"https://mediamill.dev/problems/too_large","title":"Request body too large",'
            b'"status":413,"detail":"the request body is larger than ' + str(limit).encode() + b' bytes"}')
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """A token bucket per key: ``per_minute`` tokens, refilled continuously, burst = per_minute / 6
    (at least 10). Per process: N API processes admit up to N times the rate."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(10.0, per_minute / 6.0)
        self._buckets: dict[Any, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: Any) -> None:
        """Spend a token for ``key`` or raise RateLimited with the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise RateLimited(max(1, math.ceil((1.0 - tokens) / self.rate)))
            self._buckets[key] = (tokens - 1.0, now)
