"""Structured logs (structlog): JSON when not on a terminal, readable console output otherwise.

Every line carries the correlation fields bound in the current context — ``job_id``, ``step``,
``worker`` and ``request_id`` — so ``grep job_id=…`` (or a JSON query) follows one job across the
API, the worker, its step child and the notifier. Bind them with :func:`bind_job`; carry them
into another process with :func:`current_context` and ``bind_job(**ctx)`` on the other side.

Nothing happens at import time; :func:`configure` sets the process up (and its metrics directory).
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog
from structlog.contextvars import bind_contextvars, get_contextvars, reset_contextvars

if TYPE_CHECKING:
    from mediamill.config import Settings

__all__ = [
    "CORRELATION_KEYS",
    "REQUEST_ID_HEADER",
    "JobBinding",
    "RequestIdMiddleware",
    "bind_job",
    "clear_job",
    "configure",
    "current_context",
    "current_request_id",
    "get_logger",
    "new_request_id",
]

CORRELATION_KEYS = ("job_id", "step", "worker", "request_id")
REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_configured: dict[str, Any] = {}


def configure(settings: Settings, process_role: str) -> None:
    """Configure structlog + stdlib logging for this process, and its metrics directory.

    ``process_role`` (api, worker, child, notifier, serve, cli) is added to every line.
    Safe to call more than once (the last call wins).
    """
    as_json = _wants_json(settings.log_format)
    level = logging.getLevelName(settings.log_level.upper())
    level = level if isinstance(level, int) else logging.INFO
    shared = _shared_processors(process_role)
    renderer: Any = (structlog.processors.JSONRenderer(default=str) if as_json
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    )
    _install_stdlib_handler(shared, renderer, level)
    _configured.update(role=process_role, json=as_json)
    from mediamill.observability.metrics import configure_metrics

    configure_metrics(settings)


def _wants_json(log_format: str) -> bool:
    if log_format == "json":
        return True
    if log_format == "console":
        return False
    return not sys.stderr.isatty()


def _shared_processors(process_role: str) -> list[Any]:
    pid = os.getpid()

    def add_process(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("process", process_role)
        event.setdefault("pid", pid)
        return event

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_process,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def _install_stdlib_handler(shared: list[Any], renderer: Any, level: int) -> None:
    # stdlib loggers (uvicorn, httpx, alembic) go through the same processors, so their lines
    # are JSON too and carry the bound job/request ids.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mediamill", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._mediamill = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger (bound to ``initial`` values)."""
    return structlog.get_logger(name, **initial)


class JobBinding:
    """The result of :func:`bind_job`: already bound; use as a context manager to undo on exit."""

    def __init__(self, tokens: Mapping[str, Any]) -> None:
        self._tokens = dict(tokens)

    def __enter__(self) -> JobBinding:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.reset()

    def reset(self) -> None:
        """Restore the values bound before this binding."""
        if self._tokens:
            reset_contextvars(**self._tokens)
            self._tokens = {}


def bind_job(*, job_id: int | str | None = None, step: str | None = None, worker: str | None = None,
             request_id: str | None = None, **extra: Any) -> JobBinding:
    """Bind correlation fields (those not None) to every log line of this thread / task.

    ``bind_job(job_id=7, step="Resize")`` binds for the rest of the context;
    ``with bind_job(job_id=7): …`` restores the previous values on exit.
    """
    values = {"job_id": job_id, "step": step, "worker": worker, "request_id": request_id, **extra}
    return JobBinding(bind_contextvars(**{k: v for k, v in values.items() if v is not None}))


def clear_job() -> None:
    """Unbind the correlation fields (e.g. when a worker slot finishes a job)."""
    structlog.contextvars.unbind_contextvars(*CORRELATION_KEYS)


def current_context() -> dict[str, Any]:
    """The correlation fields bound now, to hand to another process (``bind_job(**ctx)`` there)."""
    bound = get_contextvars()
    return {k: bound[k] for k in CORRELATION_KEYS if bound.get(k) is not None}


def current_request_id() -> str | None:
    """The request id bound by :class:`RequestIdMiddleware` (or by ``bind_job``), if any."""
    value = get_contextvars().get("request_id")
    return str(value) if value is not None else None


#: Request ids only correlate log lines and events, they guard nothing: a generator seeded once from the system's
#: random source makes them without a system call. (``uuid4`` reads ``os.urandom``, which lets go of the GIL on the
#: event loop's thread for every request; under load the loop then waits behind the worker threads to get it back.)
_REQUEST_IDS = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _REQUEST_IDS.seed(os.urandom(32)))  # a forked child's ids are its own


def new_request_id() -> str:
    """A fresh request id (``req_`` and 32 hex digits)."""
    return f"req_{_REQUEST_IDS.getrandbits(128):032x}"


def accept_request_id(header_value: str | None) -> str:
    """The client's X-Request-ID when it is well-formed (≤ 64 safe characters), else a new one."""
    if header_value and _VALID_REQUEST_ID.match(header_value):
        return header_value
    return new_request_id()


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class RequestIdMiddleware:
    """ASGI middleware: takes ``X-Request-ID`` (or makes one), binds it to the logs, echoes it back.

    Route handlers read it from ``request.state.request_id`` (or :func:`current_request_id`) and
    store it with the job, so the worker and the notifier can log the same id later.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(_header(scope, REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        with bind_job(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return str(value.decode("latin-1"))
    return None
