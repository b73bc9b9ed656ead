"""The one error hierarchy of mediamill.

Every error knows its class (what kind of failure it is), whether the engine may retry it,
the HTTP status the API answers with, and a public message that is safe to show a client.
The engine, the API and the CLI read these fields; nobody matches on message strings.

    error                               class                  retried  HTTP
    MediamillError                      internal               no       500 — the base (see below)
    ├── InvalidInput                    invalid_input          no       422
    │   ├── InvalidCondition            invalid_input          no       422 — carries the position
    │   ├── InvalidField                invalid_input          no       422 — names the field (``loc``)
    │   ├── UnsupportedFormat           invalid_input          no       415
    │   ├── UnsupportedCodec            invalid_input          no       422
    │   ├── SourceTooLarge              invalid_input          no       413
    │   ├── CorruptMedia                invalid_input          no       422
    │   └── UrlRefused                  invalid_input          no       422 — private, loopback, bad scheme …
    │       └── UnresolvableHost        invalid_input          no       422 — the host did not resolve
    ├── StepTimeout                     timeout                yes      504
    ├── TransientError                  transient              yes      503
    │   └── ServiceUnavailable          transient              yes      503 — database / bucket down (Retry-After)
    ├── ResourceExceeded                resource               yes      507
    │   └── StorageFull                 resource               yes      507 — below the free-space floor (Retry-After)
    ├── Unavailable                     unavailable            no       501
    ├── ToolFailed                      (given)                (class)  500 — carries the stderr tail
    ├── InternalError                   internal               yes      500
    ├── ConfigError                     config                 no       500
    │   ├── SchemaTooNew                config                 no       500 — newer code migrated the database
    │   └── SchemaBehind                config                 no       500 — migrations were not allowed to run
    ├── WorkflowInvalid                 invalid_workflow       no       422 — carries located problems
    ├── NotFound                        not_found              no       404
    ├── Conflict                        conflict               no       409
    ├── Forbidden                       forbidden              no       403
    ├── Unauthorized                    unauthorized           no       401
    ├── BodyTooLarge                    too_large              no       413
    ├── BodyTimeout                     body_timeout           no       408 — the body stalled
    ├── RateLimited                     rate_limited           no       429 — Retry-After
    │   └── TooManyAuthFailures         rate_limited           no       429 — per address and key prefix
    ├── UploadsBusy                     busy                   no       503 — the upload pool is full (Retry-After)
    ├── PreconditionFailed              tus_version            no       412 — tus: unsupported protocol version
    ├── ChecksumMismatch                checksum_mismatch      no       460 — tus: the chunk's checksum differs
    ├── Gone                            expired                no       410 — tus: the upload expired
    ├── BytesUnreachable                upload_unreachable     no       409 — tus: this replica cannot see the bytes
    ├── BytesLost                       upload_lost            no       410 — tus: the stored bytes are gone
    └── UnsupportedMediaType            unsupported_media_type no       415 — tus: wrong content type

``retried`` is the class's ``retryable``: the engine retries a step failure (``on_failure: retry``)
when the error it raised says so. ToolFailed takes its class from the tool's outcome and is retried
when that class is. The base's own fields (``internal``, not retried, 500) are what an unclassified
failure gets before ``classify_exception`` turns it into an ``InternalError``.
"""

from __future__ import annotations

import errno
import re
import traceback
from typing import ClassVar

#: The longest error message stored with a step execution (and the tail of stderr kept for operators).
MESSAGE_MAX = 4000
STDERR_TAIL = 4000
#: The tail of a traceback kept with an unexpected exception.
TRACEBACK_TAIL = 3000
#: An error message built from an unexpected exception, or kept as a breaker's last error.
DETAIL_MESSAGE = 1000
#: A source's last error (it lists what failed in a scan).
SOURCE_MESSAGE = 2000
#: An error quoted in an event, a notification attempt or a sender's result.
EVENT_MESSAGE = 500
#: An error quoted in a short note: a retry or breaker event, a routing or probe result.
SHORT_MESSAGE = 300

#: Error classes a step failure can carry.
STEP_ERROR_CLASSES = ("invalid_input", "transient", "timeout", "resource", "unavailable", "internal")
#: Classes that count against a circuit breaker (a corrupt upload is not the step's fault).
BREAKER_CLASSES = frozenset({"transient", "internal"})


class MediamillError(Exception):
    """Base of every error mediamill raises on purpose."""

    error_class: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False
    http_status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    #: diagnostics for operators (a tool's stderr, a traceback); never part of the public message
    stderr_tail: str = ""

    def __init__(self, message: str = "", *, public_message: str | None = None) -> None:
        super().__init__(message or self.title)
        self.message = message or self.title
        self._public = public_message

    @property
    def public_message(self) -> str:
        """A message safe to show a client (no paths, no internals)."""
        return self._public if self._public is not None else self.message

    def to_dict(self) -> dict[str, object]:
        return {"error_class": self.error_class, "message": self.message, "retryable": self.retryable}


class InvalidInput(MediamillError):
    error_class = "invalid_input"
    http_status = 422
    title = "Invalid input"


class InvalidCondition(InvalidInput):
    """A CEL condition that does not parse or type-check; ``position`` locates a syntax error."""

    title = "Invalid condition"

    def __init__(self, message: str, *, position: dict[str, int] | None = None) -> None:
        super().__init__(f"condition: {message}")
        self.position = position
        self.problem_fields = {"errors": [f"condition: {message}"], "position": position}


class InvalidField(InvalidInput):
    """A client value that is wrong where it stands: ``loc`` says where (``header.Upload-Length``,
    ``body.metadata.size``), and the message starts with the field's name."""

    def __init__(self, loc: str, message: str) -> None:
        super().__init__(message)
        locate(self, loc)


def locate(exc: MediamillError, loc: str) -> MediamillError:
    """Say where a client error is: sets ``exc.loc`` (``body.url``) and prefixes its messages with the
    field (``url: …``). The API lists located errors as ``errors: [{loc, msg}]``."""
    field = loc.split(".", 1)[-1]
    exc.loc = loc  # type: ignore[attr-defined]
    exc.msg = exc.public_message  # type: ignore[attr-defined]
    exc.message = f"{field}: {exc.message}"
    if exc._public is not None:
        exc._public = f"{field}: {exc._public}"
    exc.args = (exc.message,)
    return exc


class UnsupportedFormat(InvalidInput):
    http_status = 415
    title = "Unsupported format"


class UnsupportedCodec(InvalidInput):
    title = "Unsupported codec"


class SourceTooLarge(InvalidInput):
    http_status = 413
    title = "Source too large"


class CorruptMedia(InvalidInput):
    title = "Corrupt media"


class TransientError(MediamillError):
    error_class = "transient"
    retryable = True
    http_status = 503
    title = "Temporary failure"


class StepTimeout(MediamillError):
    error_class = "timeout"
    retryable = True
    http_status = 504
    title = "Step timed out"


class ResourceExceeded(MediamillError):
    error_class = "resource"
    retryable = True
    http_status = 507
    title = "Resource limit exceeded"


class StorageFull(ResourceExceeded):
    """Storage has less free space than the configured floor, or the disk filled up (HTTP 507)."""

    title = "Insufficient storage"
    retry_after = 60


class ServiceUnavailable(TransientError):
    """A dependency the request needs (the database, the storage bucket) is not answering (HTTP 503)."""

    title = "Service unavailable"
    retry_after = 5


class Unavailable(MediamillError):
    error_class = "unavailable"
    http_status = 501
    title = "Unavailable"


class InternalError(MediamillError):
    error_class = "internal"
    retryable = True
    title = "Internal error"


class UrlRefused(InvalidInput):
    """A URL points somewhere mediamill must not connect to (private, loopback, bad scheme…)."""

    title = "URL refused"


class UnresolvableHost(UrlRefused):
    """The host name did not resolve (may be temporary: a delivery retries it)."""

    title = "Host not resolvable"


class ToolFailed(MediamillError):
    """An external tool (ffmpeg, LibreOffice, …) exited badly; carries the tail of its stderr."""

    title = "Tool failed"

    def __init__(self, message: str, *, stderr_tail: str = "", error_class: str = "internal",
                 retryable: bool | None = None) -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail[-STDERR_TAIL:]
        self._class = error_class
        self._retryable = retryable

    @property
    def error_class(self) -> str:  # type: ignore[override]
        return self._class

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """What the error it stands for said (a child's reply carries it), else what its stored class says."""
        return self._retryable if self._retryable is not None else is_retryable_class(self._class)


class ConfigError(MediamillError):
    error_class = "config"
    title = "Invalid configuration"


class SchemaTooNew(ConfigError):
    """The database carries a schema revision this code does not know: newer code migrated it."""


class SchemaBehind(ConfigError):
    """The database's schema is older than this code's and migrations were not allowed to run."""


class WorkflowInvalid(MediamillError):
    """A workflow document failed validation; ``problems`` are located messages."""

    error_class = "invalid_workflow"
    http_status = 422
    title = "Invalid workflow"

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + p for p in problems))


class NotFound(MediamillError):
    error_class = "not_found"
    http_status = 404
    title = "Not found"


class Conflict(MediamillError):
    error_class = "conflict"
    http_status = 409
    title = "Conflict"


class Forbidden(MediamillError):
    error_class = "forbidden"
    http_status = 403
    title = "Forbidden"


class Unauthorized(MediamillError):
    error_class = "unauthorized"
    http_status = 401
    title = "Unauthorized"


# ------------------------------------------------------------------ the API's request limits and uploads
class BodyTooLarge(MediamillError):
    error_class = "too_large"
    http_status = 413
    title = "Request body too large"


class BodyTimeout(MediamillError):
    """The client stopped sending the request body (a stalled upload holds a connection for nothing)."""

    error_class = "body_timeout"
    http_status = 408
    title = "Request body timeout"


class RateLimited(MediamillError):
    error_class = "rate_limited"
    http_status = 429
    title = "Too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message or f"submit rate limit reached; retry in {retry_after} s")
        self.retry_after = retry_after


class TooManyAuthFailures(RateLimited):
    """Too many failed authentication attempts from this address or for this key."""

    title = "Too many failed authentication attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after, f"too many failed authentication attempts; retry in {retry_after} s")


class UploadsBusy(MediamillError):
    error_class = "busy"
    http_status = 503
    title = "Upload capacity reached"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PreconditionFailed(MediamillError):
    error_class = "tus_version"
    http_status = 412
    title = "Unsupported tus version"


class ChecksumMismatch(MediamillError):
    error_class = "checksum_mismatch"
    http_status = 460
    title = "Checksum mismatch"


class Gone(MediamillError):
    error_class = "expired"
    http_status = 410
    title = "Upload expired"


class BytesUnreachable(MediamillError):
    """This replica cannot see the bytes the upload has so far (another uploads folder)."""

    error_class = "upload_unreachable"
    http_status = 409
    title = "Upload bytes not reachable from this server"


class BytesLost(MediamillError):
    """The upload's stored bytes are gone or do not match its recorded offset: it cannot continue."""

    error_class = "upload_lost"
    http_status = 410
    title = "Upload bytes lost"


class UnsupportedMediaType(MediamillError):
    error_class = "unsupported_media_type"
    http_status = 415
    title = "Unsupported media type"


#: The error of each class a step failure can carry (``error_for_class``, stored failures).
_BY_CLASS: dict[str, type[MediamillError]] = {
    "invalid_input": InvalidInput,
    "transient": TransientError,
    "timeout": StepTimeout,
    "resource": ResourceExceeded,
    "unavailable": Unavailable,
    "internal": InternalError,
}


#: Classes the engine retries when a step says ``on_failure: retry``: those whose error is ``retryable``.
RETRYABLE_CLASSES = frozenset(name for name, cls in _BY_CLASS.items() if cls.retryable)


def error_for_class(error_class: str, message: str) -> MediamillError:
    """Build the error of a given class (used by the ``fail`` test action and child results)."""
    cls = _BY_CLASS.get(error_class)
    if cls is None:
        raise ValueError(f"unknown error class {error_class!r}; expected one of {', '.join(_BY_CLASS)}")
    return cls(message)


#: errno values that mean "the disk is full": a ``resource`` failure, retried after back-off
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
#: how libraries that wrap the OS error (libvips, pdfium …) report it
_NO_SPACE_TEXT = re.compile(r"No space left on device|Disk quota exceeded", re.IGNORECASE)
_PATH = re.compile(r"""(["'])(?:[A-Za-z]:)?[/\\][^"'\n]*\1|(?<![\w.])/(?:[\w.@+-]+/)+[\w.@+-]*""")


def without_paths(text: str) -> str:
    """``text`` with file paths replaced by ``<path>``: server paths never reach a client."""
    return _PATH.sub("<path>", text)


def classify_exception(exc: BaseException) -> MediamillError:
    """Any exception a step raised, as the classified error the engine records.

    A ``MediamillError`` is itself. A full disk is ``resource`` (retried after back-off: space
    comes back when other jobs finish or an operator frees it), running out of memory is
    ``resource``; anything else is our bug: ``internal``. The message is public, so paths are
    removed; the traceback goes to ``stderr_tail`` for operators.
    """
    if isinstance(exc, MediamillError):
        return exc
    tail = "".join(traceback.format_exception(exc))[-TRACEBACK_TAIL:]
    err: MediamillError
    if (isinstance(exc, OSError) and exc.errno in _NO_SPACE) or _NO_SPACE_TEXT.search(str(exc)):
        err = ResourceExceeded("the server ran out of disk space while the step was writing its files")
    elif isinstance(exc, MemoryError):
        err = ResourceExceeded("the step ran out of memory (address-space limit)")
    else:
        err = InternalError(without_paths(f"{type(exc).__name__}: {exc}")[:DETAIL_MESSAGE])
    err.stderr_tail = tail
    return err


def is_retryable_class(error_class: str) -> bool:
    """Whether a *stored* error class (a child's reply, a recorded step failure) is retried. Where the
    exception is at hand, ask the exception: ``exc.retryable``."""
    return error_class in RETRYABLE_CLASSES
