"""Small helpers every route module shares: the runtime, the engine operations, blocking calls."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from mediamill.errors import InvalidField
from mediamill.runtime import Runtime
from mediamill.store.connections import make_read_engine
from mediamill.store.db import Engine

T = TypeVar("T")
#: ids fit a SQLite INTEGER and a JSON number exactly
MAX_ID = 2**53
MAX_VERSION = 1_000_000
#: the largest integer every database column and CEL accepts (a signed 64-bit integer)
MAX_INT64 = 2**63 - 1
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\"\\;]")


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def read_engine(request: Request) -> Engine:
    """The engine for read-only work.

    On SQLite every transaction of the shared engine begins IMMEDIATE (it takes the write lock
    so writers queue instead of failing), which would make each read wait behind each write.
    Reads here go through a second engine in autocommit mode with ``query_only`` on: WAL lets
    them run beside the writer. On PostgreSQL it is the shared engine.
    """
    state = request.app.state
    engine: Engine | None = getattr(state, "read_engine", None)
    if engine is None:
        engine = state.read_engine = make_read_engine(runtime(request).engine)
    return engine


def ops() -> ModuleType:
    """The engine's operations module (imported on first use: the API starts without workers)."""
    from mediamill.engine import operations

    return operations


async def blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking (database, storage) call off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def safe_filename(name: str | None, default: str | None = None) -> str | None:
    """A display name only: the last path segment, no control or quoting characters, ≤ 255 chars.

    Filenames are metadata; they never become a storage key or a filesystem path.
    """
    if not name:
        return default
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("", name).strip().lstrip(".")
    return name[:255] or default


def base_url(request: Request) -> str:
    """The public base URL (``MEDIAMILL_PUBLIC_URL`` when set, else what the request says)."""
    configured = runtime(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def client_int(value: str, loc: str, *, maximum: int = MAX_INT64) -> int:
    """A non-negative integer a client sent as text (a header, a form field).

    Only ASCII digits count: ``str.isdigit`` also accepts "²" (which ``int`` refuses) and ``int``
    accepts other scripts' digits, neither of which belongs in an HTTP header.
    """
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(maximum)):
        raise InvalidField(loc, f"must be a non-negative integer in ASCII digits, got {value[:40]!r}")
    number = int(text)
    if number > maximum:
        raise InvalidField(loc, f"must be at most {maximum}, got {number}")
    return number


def check_json_integers(value: Any, loc: str) -> None:
    """Refuse integers outside the signed 64-bit range anywhere in a JSON value: conditions (CEL)
    and both databases hold no larger ones, and the error names the exact place."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_INT64 - 1 <= value <= MAX_INT64:
            raise InvalidField(loc, "integer out of range (a signed 64-bit integer at most)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_integers(item, f"{loc}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json_integers(item, f"{loc}.{i}")


def upload_slot(request: Request, holder: Any) -> Any:
    """A context manager holding one of ``holder``'s concurrent upload slots (429 / 503 when none is free)."""
    from mediamill.api.limits import UploadSlots
    from mediamill.api.streaming import STREAM_THREADS

    state = request.app.state
    slots: UploadSlots | None = getattr(state, "upload_slots", None)
    if slots is None:
        slots = state.upload_slots = UploadSlots(per_key=runtime(request).settings.max_uploads_per_key,
                                                 total=STREAM_THREADS)
    return slots.hold(holder)


_DATETIME: Any = None
_DATE_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_time(value: str | None, loc: str) -> datetime | None:
    """An RFC 3339 / ISO-8601 time from a query string as naive UTC (the database's timestamps);
    a time without an offset is UTC. Documented as ``format: date-time``."""
    global _DATETIME
    if value is None:
        return None
    if _DATETIME is None:
        from pydantic import TypeAdapter

        _DATETIME = TypeAdapter(datetime)
    try:
        if not _DATE_START.match(value):  # pydantic would also read a number as a Unix time
            raise ValueError(value)
        parsed: datetime = _DATETIME.validate_python(value)
    except ValueError:
        raise InvalidField(loc, f"must be an RFC 3339 time such as 2026-01-31T12:00:00Z, got {value[:40]!r}") from None
    if parsed.tzinfo is None:
        return parsed
    try:
        return parsed.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable UTC instant
        return datetime.min if parsed.year == 1 else datetime.max
