"""Caps on the request head: the total size of the request line and headers, and the header count.

A request over either cap is answered ``431 Request Header Fields Too Large`` and its
connection closed. Two layers enforce them:

* :class:`CappedHttpToolsProtocol`, the HTTP protocol ``serve`` and ``api`` run uvicorn with,
  counts while the head is still arriving — a 1 MiB header is refused after the first
  ``max_header_bytes``, never buffered whole, and the 101st header is refused as it is parsed;
* :class:`HeaderLimitMiddleware` checks the parsed head again inside the app, for any other
  server the app may be mounted under.

The protocol's caps are process-wide (:func:`configure`), set from the settings by whatever
builds the app in that process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mediamill.api.problems import PROBLEM

Scope = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[None]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class HeadLimits:
    """The most bytes (request line + headers) and the most header fields one request may carry."""

    max_bytes: int = 64 * 1024
    max_count: int = 100

    def exceeded(self, size: int, count: int) -> str | None:
        """Why a head of ``size`` bytes and ``count`` fields is refused, or None."""
        if count > self.max_count:
            return f"more than {self.max_count} header fields"
        if size > self.max_bytes:
            return f"request line and headers larger than {self.max_bytes} bytes"
        return None


def _body(reason: str) -> bytes:
    return (b'{"type":"https://mediamill.dev/problems/headers_too_large","title":"Request Header Fields Too Large",'
            b'"status":431,"detail":"' + reason.encode() + b'"}')


def configure(settings: Any) -> None:
    """Use the settings' caps for the HTTP protocol of this process."""
    CappedHttpToolsProtocol.limits = HeadLimits(settings.max_header_bytes, settings.max_header_count)


class HeaderLimitMiddleware:
    """431 for a parsed request head over the caps (the server may not enforce them)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_count: int) -> None:
        self.app = app
        self.limits = HeadLimits(max_bytes, max_count)

    async def __call__(self, scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope.get("headers") or []
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(name) + len(value) + 4 for name, value in headers)  # ": " and CRLF
            reason = self.limits.exceeded(size, len(headers))
            if reason:
                body = _body(reason)
                await send({"type": "http.response.start", "status": 431,
                            "headers": [(b"content-type", PROBLEM.encode()), (b"connection", b"close"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class _HeadTooLarge(Exception):
    pass


class CappedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing an oversized request head while it arrives (431)."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_open = True  # reading a request line and headers (not a body)
        self._head_bytes = 0
        self._head_fields = 0
        self._refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:  # answered and closing: ignore whatever was still in flight
            return
        if self._head_open:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_open and self._refusal is None and not self.transport.is_closing():
            reason = self.limits.exceeded(self._head_bytes, self._head_fields)
            if reason:  # still no end of the head after max_bytes: stop reading it
                self._refuse(reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        reason = self.limits.exceeded(0, self._head_fields)
        if reason:
            self._refusal = reason
            raise _HeadTooLarge(reason)  # the parser stops and reports an error: answered below
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        reason = self.limits.exceeded(self._head_bytes_of_scope(), self._head_fields)
        if reason:
            self._refusal = reason
            raise _HeadTooLarge(reason)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_open, self._head_bytes, self._head_fields = True, 0, 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        super().send_400_response(msg)

    def _head_bytes_of_scope(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse(self, reason: str) -> None:
        self._refusal = reason
        body = _body(reason)
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: " + PROBLEM.encode()
                             + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
                             + body)
        self.transport.close()
