"""The SDK's exceptions: one tree, built from the server's problem documents (RFC 9457).

::

    MediamillClientError                 anything the SDK raises
    ├── APIConnectionError               the server could not be reached / the connection broke
    ├── WaitTimeout                      ``wait()`` gave up before the job finished
    ├── UploadError                      a tus upload could not be completed
    └── APIError                         the server answered with an error (status, type, title, detail)
        ├── BadRequestError              400
        ├── AuthenticationError          401
        ├── PermissionDeniedError        403
        ├── NotFoundError                404 (also: another tenant's resource)
        ├── ConflictError                409
        ├── PayloadTooLargeError         413
        ├── UnsupportedMediaTypeError    415
        ├── UnprocessableEntityError     422 (``errors`` lists the located problems)
        ├── RateLimitError               429 (``retry_after`` in seconds)
        └── ServerError                  5xx (``ServiceUnavailableError`` for 503)
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class MediamillClientError(Exception):
    """Base of every error the SDK raises."""


class APIConnectionError(MediamillClientError):
    """No answer: the server is unreachable, or the connection broke mid-request."""


class WaitTimeout(MediamillClientError):
    """``wait()`` ran out of time; ``job`` is the last state seen."""

    def __init__(self, message: str, job: Any = None) -> None:
        super().__init__(message)
        self.job = job


class UploadError(MediamillClientError):
    """A tus upload could not be completed (the connection kept failing without progress)."""


class APIError(MediamillClientError):
    """The server answered with an error; the fields come from its problem document."""

    def __init__(self, status: int, *, type: str = "about:blank", title: str = "", detail: str | None = None,
                 retry_after: float | None = None, problem: dict[str, Any] | None = None,
                 request_id: str | None = None) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.retry_after = retry_after
        self.problem: dict[str, Any] = problem or {}
        self.request_id = request_id
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """What a person should read: the detail, else the title."""
        return self.detail or self.title or f"HTTP {self.status}"

    @property
    def error_class(self) -> str | None:
        """mediamill's error class (``not_found``, ``conflict``, ``invalid_workflow`` …) when the server sent one."""
        value = self.problem.get("error_class")
        return str(value) if value is not None else None

    @property
    def errors(self) -> list[Any]:
        """Located problems (validation errors, workflow problems), when the server listed them."""
        return list(self.problem.get("errors") or [])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, title={self.title!r}, detail={self.detail!r})"


class BadRequestError(APIError):
    """400."""


class AuthenticationError(APIError):
    """401: no key, or a key that is unknown or revoked."""


class PermissionDeniedError(APIError):
    """403: the key's role is too weak."""


class NotFoundError(APIError):
    """404: no such resource (another tenant's resources answer 404 too)."""


class ConflictError(APIError):
    """409: the resource is not in a state that allows this (or an idempotency key was reused)."""


class PayloadTooLargeError(APIError):
    """413."""


class UnsupportedMediaTypeError(APIError):
    """415."""


class UnprocessableEntityError(APIError):
    """422: the request (or a workflow document) is invalid."""


class RateLimitError(APIError):
    """429: slow down; ``retry_after`` says for how many seconds."""


class ServerError(APIError):
    """5xx."""


class ServiceUnavailableError(ServerError):
    """503."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 413: PayloadTooLargeError, 415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError, 429: RateLimitError, 503: ServiceUnavailableError,
}


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_class_for(status: int) -> type[APIError]:
    """The exception class for an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIError


def error_from_response(response: httpx.Response, body: bytes | None = None) -> APIError:
    """Build the matching exception from an error response (a problem document when there is one)."""
    raw = response.content if body is None else body
    problem: dict[str, Any] = {}
    try:
        parsed = json.loads(raw) if raw else {}
        if isinstance(parsed, dict):
            problem = parsed
    except ValueError:
        problem = {}
    status = int(problem.get("status") or response.status_code)
    if status != response.status_code:
        status = response.status_code  # the HTTP status is the truth
    title = str(problem.get("title") or response.reason_phrase or "")
    detail = problem.get("detail")
    if detail is None and not problem and raw:
        detail = raw[:500].decode("utf-8", "replace")
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    return error_class_for(status)(
        status, type=str(problem.get("type") or "about:blank"), title=title,
        detail=str(detail) if detail is not None else None, retry_after=retry_after, problem=problem,
        request_id=response.headers.get("x-request-id"))
