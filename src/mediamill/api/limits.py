"""Request limits: body size (an ASGI middleware) and a per-key submit rate (a token bucket)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mediamill.api.problems import PROBLEM
from mediamill.errors import BodyTimeout, BodyTooLarge, RateLimited, UploadsBusy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# multipart framing around a file: boundaries and part headers (a few KB at most)
MULTIPART_OVERHEAD = 64 * 1024


def _is_upload(scope: Scope) -> bool:
    path, method = scope.get("path", ""), scope.get("method", "")
    if path.startswith("/v1/uploads") and method in ("POST", "PATCH", "PUT"):
        return True
    if path == "/v1/jobs" and method == "POST":
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
        return bool(ctype.startswith(b"multipart/"))
    return False


class BodyLimitMiddleware:
    """413 for bodies over the limit: ``max_upload_bytes`` on upload routes, ``max_request_bytes``
    elsewhere. Checks Content-Length first and counts streamed bytes as a backstop.

    A body that sends nothing for ``body_idle_seconds`` ends its request with 408: a stalled
    client must not hold a connection, an upload slot and a thread forever."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, max_request_bytes: int,
                 max_upload_bytes: int, body_idle_seconds: float = 60.0) -> None:
        self.app = app
        self.max_request = max_request_bytes
        self.max_upload = max_upload_bytes + MULTIPART_OVERHEAD
        self.idle = body_idle_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload if _is_upload(scope) else self.max_request
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(send, limit)
            return
        seen, done = 0, False

        async def counting_receive() -> Message:
            nonlocal seen, done
            if done:  # after the body, receive() only waits for a disconnect (streaming responses)
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle)
            except TimeoutError:
                raise BodyTimeout(f"no request body bytes for {self.idle:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
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


class UploadSlots:
    """Concurrent uploads: at most ``per_key`` per API key (429 beyond) and ``total`` in the process
    (503 beyond; ``total`` is the size of the thread pool that writes upload bytes, so an upload is
    refused at once instead of waiting for a thread). Both answers carry Retry-After."""

    def __init__(self, *, per_key: int, total: int) -> None:
        self.per_key, self.total = per_key, total
        self._held: dict[Any, int] = {}
        self._count = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: Any) -> Any:
        self._take(key)
        try:
            yield
        finally:
            self._give(key)

    def _take(self, key: Any) -> None:
        with self._lock:
            if self._held.get(key, 0) >= self.per_key:
                raise RateLimited(2, f"{self.per_key} uploads of this key are in progress; retry when one ends")
            if self._count >= self.total:
                raise UploadsBusy(f"the server is receiving {self.total} uploads; retry shortly", 2)
            self._held[key] = self._held.get(key, 0) + 1
            self._count += 1

    def _give(self, key: Any) -> None:
        with self._lock:
            self._count -= 1
            left = self._held.get(key, 1) - 1
            if left:
                self._held[key] = left
            else:
                self._held.pop(key, None)
