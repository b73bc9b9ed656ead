"""What the sync and async clients share: the endpoint table, the retry policy, the SSE decoder,
tus header helpers and response decoding. Nothing here does I/O."""

from __future__ import annotations

import base64
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from mediamill.client import models as m
from mediamill.client.errors import APIError, error_from_response

TUS_VERSION = "1.0.0"
OCTETS = "application/offset+octet-stream"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEFAULT_CHUNK = 8 * 1024 * 1024
#: how many bytes of an upload one read takes (also the progress callback's granularity)
READ_SIZE = 256 * 1024
#: fields of a JSON job submission the SDK sends (checked against the ``JobSubmit`` schema)
SUBMIT_FIELDS = ("upload_id", "storage_key", "url", "workflow", "version", "priority", "metadata", "params",
                 "notify", "filename")


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API the SDK calls (``tests/client`` checks each against the OpenAPI document)."""

    method: str
    path: str
    model: type[m.Model] | None = None
    query: tuple[str, ...] = ()
    #: an operation of a server newer than the document this SDK was last checked against: skipped by the
    #: drift check until the document has it, then checked like the rest
    pending: bool = False


ENDPOINTS: dict[str, Endpoint] = {
    "submit": Endpoint("POST", "/v1/jobs", m.JobAccepted),
    "jobs": Endpoint("GET", "/v1/jobs", m.JobSummary,
                     ("status", "workflow", "queue", "submitter", "since", "until", "limit", "before_id", "shadow")),
    "job": Endpoint("GET", "/v1/jobs/{job_id}", m.Job),
    "set_priority": Endpoint("PATCH", "/v1/jobs/{job_id}", m.JobPriority),
    "cancel": Endpoint("POST", "/v1/jobs/{job_id}/cancel", m.StatusResult),
    "retry": Endpoint("POST", "/v1/jobs/{job_id}/retry", m.StatusResult),
    "outputs": Endpoint("GET", "/v1/jobs/{job_id}/outputs", m.Output),
    "download": Endpoint("GET", "/v1/jobs/{job_id}/outputs/{name}"),
    "download_input": Endpoint("GET", "/v1/jobs/{job_id}/input"),
    "events": Endpoint("GET", "/v1/jobs/{job_id}/events", query=("after",)),
    "upload_create": Endpoint("POST", "/v1/uploads"),
    "upload_offset": Endpoint("HEAD", "/v1/uploads/{upload_id}"),
    "upload_append": Endpoint("PATCH", "/v1/uploads/{upload_id}"),
    "upload_terminate": Endpoint("DELETE", "/v1/uploads/{upload_id}"),
    "upload": Endpoint("GET", "/v1/uploads/{upload_id}", m.Upload),
    "workflows": Endpoint("GET", "/v1/workflows", m.Workflow),
    "workflow": Endpoint("GET", "/v1/workflows/{code}", m.WorkflowDefinition, ("version",)),
    "workflow_versions": Endpoint("GET", "/v1/workflows/{code}/versions", m.WorkflowVersion),
    "workflow_create": Endpoint("POST", "/v1/workflows", m.WorkflowSaved, ("comment", "shared")),
    "workflow_update": Endpoint("PUT", "/v1/workflows/{code}", m.WorkflowSaved, ("comment", "activate")),
    "workflow_validate": Endpoint("POST", "/v1/workflows/validate", m.WorkflowValidation),
    "workflow_diff": Endpoint("GET", "/v1/workflows/{code}/diff", m.WorkflowDiff, ("from", "to")),
    "workflow_activate": Endpoint("POST", "/v1/workflows/{code}/activate", m.WorkflowActivation),
    "workflow_deactivate": Endpoint("POST", "/v1/workflows/{code}/deactivate", m.WorkflowActivation),
    "dead_letters": Endpoint("GET", "/v1/dead-letters", m.DeadLetter,
                             ("error_class", "workflow", "include_resolved", "limit", "before_id")),
    "dead_letter_retry": Endpoint("POST", "/v1/dead-letters/{dl_id}/retry", m.JobId),
    "dead_letters_retry": Endpoint("POST", "/v1/dead-letters/retry", m.Count),
    "dead_letter_discard": Endpoint("POST", "/v1/dead-letters/{dl_id}/discard", m.Ok),
    "queues": Endpoint("GET", "/v1/queues", m.Queue),
    "queue_pause": Endpoint("POST", "/v1/queues/{name}/pause", m.Ok),
    "queue_resume": Endpoint("POST", "/v1/queues/{name}/resume", m.Ok),
    "workers": Endpoint("GET", "/v1/workers", m.Worker),
    "breakers": Endpoint("GET", "/v1/breakers", m.Breaker),
    "breaker_reset": Endpoint("POST", "/v1/breakers/{action}/reset", m.BreakerReset),
    "keys": Endpoint("GET", "/v1/keys"),
    "key_create": Endpoint("POST", "/v1/keys", m.KeyCreated),
    "key_revoke": Endpoint("DELETE", "/v1/keys/{key_id}", m.Ok),
    "me": Endpoint("GET", "/v1/me", m.Me),
    "route": Endpoint("POST", "/v1/jobs/{job_id}/route"),
    "reprocess": Endpoint("POST", "/v1/jobs/{job_id}/reprocess"),
    "reprocess_many": Endpoint("POST", "/v1/jobs/reprocess"),
    "routing_rules": Endpoint("GET", "/v1/routing-rules"),
    "routing_rule_create": Endpoint("POST", "/v1/routing-rules"),
    "routing_rule": Endpoint("GET", "/v1/routing-rules/{rule_id}"),
    "routing_rule_update": Endpoint("PATCH", "/v1/routing-rules/{rule_id}"),
    "routing_rule_delete": Endpoint("DELETE", "/v1/routing-rules/{rule_id}"),
    "routing_reorder": Endpoint("POST", "/v1/routing-rules/reorder"),
    "routing_explain": Endpoint("POST", "/v1/routing-rules/explain"),
    "rollout_start": Endpoint("POST", "/v1/workflows/{code}/rollout"),
    "rollout": Endpoint("GET", "/v1/workflows/{code}/rollout"),
    "rollout_promote": Endpoint("POST", "/v1/workflows/{code}/rollout/promote"),
    "rollout_abort": Endpoint("DELETE", "/v1/workflows/{code}/rollout"),
    "shadow_start": Endpoint("POST", "/v1/workflows/{code}/shadow"),
    "shadow": Endpoint("GET", "/v1/workflows/{code}/shadow"),
    "shadow_stop": Endpoint("DELETE", "/v1/workflows/{code}/shadow"),
    "shadow_promote": Endpoint("POST", "/v1/workflows/{code}/shadow/promote"),
    "shadow_report": Endpoint("GET", "/v1/workflows/{code}/shadow/report", query=("version",)),
    "summary": Endpoint("GET", "/v1/analytics/summary", m.Summary, ("window",)),
    "actions": Endpoint("GET", "/v1/actions", m.ActionInfo, ("family",)),
    "action": Endpoint("GET", "/v1/actions/{name}", m.ActionInfo),
    "channels": Endpoint("GET", "/v1/channels"),
    "channel_create": Endpoint("POST", "/v1/channels"),
    "channel_delete": Endpoint("DELETE", "/v1/channels/{channel_id}"),
    "channel_test": Endpoint("POST", "/v1/channels/{channel_id}/test"),
    "channel_rotate": Endpoint("POST", "/v1/channels/{channel_id}/rotate-secret", query=("overlap_seconds",)),
    "notifications": Endpoint("GET", "/v1/notifications",
                              query=("status", "event_type", "job_id", "include_events", "limit", "before")),
    "notification_replay": Endpoint("POST", "/v1/notifications/{notification_id}/replay"),
    "alerts": Endpoint("GET", "/v1/alerts", query=("state", "limit")),
}


@dataclass(frozen=True)
class RetryPolicy:
    """Retry refused requests: a ``Retry-After`` the server sends is honoured (up to ``max_wait``);
    without one the wait grows exponentially from ``backoff`` with jitter.

    ``statuses`` are answers that mean "not done, try later" (the request had no effect), so every
    method is retried on them; a connection that could not be opened is retried too.
    """

    max_retries: int = 3
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 502, 503, 504}))
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_wait: float = 120.0
    respect_retry_after: bool = True

    def delay(self, attempt: int, error: APIError | None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None to give up."""
        if attempt > self.max_retries:
            return None
        if error is not None:
            if error.status not in self.statuses:
                return None
            if self.respect_retry_after and error.retry_after is not None:
                return None if error.retry_after > self.max_wait else error.retry_after
        wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return float(wait) * (0.5 + random.random() / 2)


def base_headers(api_key: str | None, user_agent: str | None) -> dict[str, str]:
    from mediamill import __version__

    headers = {"User-Agent": user_agent or f"mediamill-python/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def resolve_credentials(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The base URL and key: the arguments, else ``MEDIAMILL_URL`` / ``MEDIAMILL_API_KEY``."""
    url = url or os.environ.get("MEDIAMILL_URL") or ""
    if not url:
        raise ValueError("give the server URL (Client(url=...) or MEDIAMILL_URL)")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the server URL must start with http:// or https://, got {url!r}")
    return url.rstrip("/"), api_key or os.environ.get("MEDIAMILL_API_KEY") or None


def path_of(name: str, /, **params: Any) -> str:
    from urllib.parse import quote

    return ENDPOINTS[name].path.format(**{k: quote(str(v), safe="") for k, v in params.items()})


def query(**params: Any) -> dict[str, Any]:
    """Query parameters without the unset ones (booleans as the API spells them)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else v
    return out


def check(response: httpx.Response) -> httpx.Response:
    """The response, or the matching APIError (the body must already be read)."""
    if response.status_code >= 400:
        raise error_from_response(response)
    return response


def items(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    return list(body["items"] if isinstance(body, dict) else body)


# ------------------------------------------------------------------------------ submit
def submit_body(*, upload_id: str | None = None, url: str | None = None, storage_key: str | None = None,
                workflow: str | None, priority: int | None, metadata: dict[str, Any] | None,
                params: dict[str, Any] | None, version: int | None = None,
                notify: dict[str, Any] | None = None, filename: str | None = None) -> dict[str, Any]:
    body = {"upload_id": upload_id, "url": url, "storage_key": storage_key, "workflow": workflow,
            "priority": priority, "metadata": metadata, "params": params, "version": version,
            "notify": notify, "filename": filename}
    return {k: v for k, v in body.items() if v is not None and k in SUBMIT_FIELDS}


def idempotency_headers(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


# ------------------------------------------------------------------------------ tus
def tus_metadata(meta: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())


def upload_source(source: str | os.PathLike[str] | BinaryIO, filename: str | None) -> tuple[BinaryIO, int, str,
                                                                                             bool]:
    """(file object, size, file name, whether we opened it) for a path or a seekable binary file."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        fh: BinaryIO = path.open("rb")
        return fh, path.stat().st_size, filename or path.name, True
    try:
        start = source.tell()
        source.seek(0, os.SEEK_END)
        size = source.tell() - start
        source.seek(start)
    except (AttributeError, OSError) as exc:
        raise ValueError("submit needs a path or a seekable binary file object") from exc
    name = filename or Path(str(getattr(source, "name", "") or "upload")).name
    return source, size, name, False


def upload_backoff(failures: int, error: Exception) -> float:
    """Seconds before resuming an upload: the server's ``Retry-After`` when it sent one (at most a
    minute), else a back-off growing from 0.2 s to 5 s."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return float(min(60.0, retry_after))
    return float(min(5.0, 0.2 * 2 ** (failures - 1)))


def upload_id_of(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


def offset_of(response: httpx.Response) -> int:
    value = response.headers.get("upload-offset", "")
    if not value.isdigit():
        raise APIError(response.status_code, title="the server sent no Upload-Offset")
    return int(value)


# ------------------------------------------------------------------------------ SSE
class SSEDecoder:
    """Server-Sent Events line by line (the WHATWG rules mediamill's streams need): an event is
    dispatched at a blank line; an event cut off by the end of the stream is never dispatched."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> tuple[str, str, str | None] | None:
        """One line (without its end); returns (event, data, id) when an event is complete."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> tuple[str, str, str | None] | None:
        if self._id is not None:
            self.last_id = self._id
        if not self._data:
            self._event, self._id = "", None
            return None
        out = (self._event or "message", "\n".join(self._data), self._id)
        self._data, self._event, self._id = [], "", None
        return out


def parse_event(frame: tuple[str, str, str | None]) -> m.Event | None:
    import json

    _name, data, event_id = frame
    if event_id is None or not event_id.isdigit():
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    return m.event_from_sse(event_id, payload) if isinstance(payload, dict) else None


def filename_from_disposition(value: str | None) -> str | None:
    if not value:
        return None
    from email.message import Message

    msg = Message()
    msg["content-disposition"] = value
    name = msg.get_filename()
    return Path(name).name if name else None
