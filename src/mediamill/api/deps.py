"""Small helpers every route module shares: the runtime, the engine operations, blocking calls."""

from __future__ import annotations

import re
import unicodedata
from types import ModuleType
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from mediamill.runtime import Runtime

T = TypeVar("T")
#: ids fit a SQLite INTEGER and a JSON number exactly
MAX_ID = 2**53
MAX_VERSION = 1_000_000
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\"\\;]")


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


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
