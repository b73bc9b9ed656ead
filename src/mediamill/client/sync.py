"""The synchronous client."""

from __future__ import annotations

import builtins
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from mediamill.client import _core as c
from mediamill.client import models as m
from mediamill.client.errors import (
    APIConnectionError,
    APIError,
    ConflictError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    UploadError,
    WaitTimeout,
    error_from_response,
)

Progress = Callable[[int, int], None]
Source = str | os.PathLike[str] | BinaryIO
Document = str | os.PathLike[str] | dict[str, Any]


class Client:
    """A client of one mediamill server.

    >>> with Client("http://127.0.0.1:8000", "mm_…") as mm:
    ...     job = mm.submit("clip.mp4", workflow="WF-VIDEO-TRANSCODE")
    ...     done = mm.wait(job.id, timeout=600)
    ...     for out in done.outputs:
    ...         mm.download(job.id, out.name, "out/")

    ``url`` and ``api_key`` default to ``MEDIAMILL_URL`` and ``MEDIAMILL_API_KEY``. ``retry``
    (a :class:`RetryPolicy`) retries refused requests, honouring ``Retry-After``; without it the
    first error is raised. Errors are :class:`APIError` subclasses built from the problem document.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout = c.DEFAULT_TIMEOUT, retry: c.RetryPolicy | None = None,
                 chunk_size: int = c.DEFAULT_CHUNK, max_reconnects: int = 10, user_agent: str | None = None,
                 http_client: httpx.Client | None = None) -> None:
        self.url, self.api_key = c.resolve_credentials(url, api_key)
        self.retry_policy = retry
        self.chunk_size = chunk_size
        self.max_reconnects = max_reconnects
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        self._headers = c.base_headers(self.api_key, user_agent)
        self.workflows = Workflows(self)
        self.dead_letters = DeadLetters(self)
        self.routes = Routes(self)
        self.rollouts = Rollouts(self)
        self.shadows = Shadows(self)

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """Send one request to ``path`` (``/v1/…``); an error answer raises its :class:`APIError`."""
        headers = {**self._headers, **(kwargs.pop("headers", None) or {})}
        url = path if path.startswith(("http://", "https://")) else self.url + path
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                delay = self._delay(attempt, None) if retry and isinstance(exc, httpx.ConnectError) else None
                if delay is None:
                    raise APIConnectionError(f"{method} {url}: {exc or type(exc).__name__}") from exc
                time.sleep(delay)
                continue
            if response.status_code < 400:
                return response
            error = error_from_response(response)
            delay = self._delay(attempt, error) if retry else None
            if delay is None:
                raise error
            time.sleep(delay)

    def _delay(self, attempt: int, error: APIError | None) -> float | None:
        return self.retry_policy.delay(attempt, error) if self.retry_policy else None

    def _call(self, name: str, /, *, params: dict[str, Any] | None = None, json: Any = None,
              headers: dict[str, str] | None = None, content: Any = None, **path: Any) -> Any:
        endpoint = c.ENDPOINTS[name]
        response = self.request(endpoint.method, c.path_of(name, **path), params=params, json=json,
                                headers=headers, content=content)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # ------------------------------------------------------------------ submit
    def submit(self, source: Source, workflow: str | None = None, priority: int | None = None,
               metadata: dict[str, Any] | None = None, idempotency_key: str | None = None, *,
               params: dict[str, Any] | None = None, version: int | None = None,
               notify: dict[str, Any] | None = None, filename: str | None = None,
               on_upload_progress: Progress | None = None) -> m.JobAccepted:
        """Upload a file (a path or a seekable binary file object) over tus and submit it as a job.

        A dropped connection resumes from the offset the server reports. ``workflow`` defaults to
        routing by content; the same ``idempotency_key`` with the same request returns the same job.
        """
        upload_id = self.upload(source, filename=filename, on_progress=on_upload_progress)
        body = c.submit_body(upload_id=upload_id, workflow=workflow, priority=priority, metadata=metadata,
                             params=params, version=version, notify=notify)
        data = self._call("submit", json=body, headers=c.idempotency_headers(idempotency_key))
        return m.JobAccepted.from_api(data)

    def submit_url(self, url: str, workflow: str | None = None, priority: int | None = None,
                   metadata: dict[str, Any] | None = None, idempotency_key: str | None = None, *,
                   params: dict[str, Any] | None = None, filename: str | None = None) -> m.JobAccepted:
        """Submit a job whose input the server fetches from ``url``."""
        body = c.submit_body(url=url, workflow=workflow, priority=priority, metadata=metadata, params=params,
                             filename=filename)
        return m.JobAccepted.from_api(self._call("submit", json=body,
                                                 headers=c.idempotency_headers(idempotency_key)))

    def upload(self, source: Source, *, filename: str | None = None, on_progress: Progress | None = None,
               upload_id: str | None = None) -> str:
        """Upload a file with tus and return the upload id (resuming after dropped connections).

        ``upload_id`` continues an upload an earlier process started (from the server's offset).
        """
        fh, size, name, owned = c.upload_source(source, filename)
        try:
            start = fh.tell()
            if upload_id is None:
                created = self.request("POST", c.path_of("upload_create"), headers={
                    "Tus-Resumable": c.TUS_VERSION, "Upload-Length": str(size),
                    "Upload-Metadata": c.tus_metadata({"filename": name})})
                upload_id = c.upload_id_of(created.headers.get("location", ""))
                offset = 0
            else:
                offset = self.upload_offset(upload_id)
            if on_progress:
                on_progress(offset, size)
            self._send_upload(upload_id, fh, start, size, on_progress, offset)
            return upload_id
        finally:
            if owned:
                fh.close()

    def upload_offset(self, upload_id: str) -> int:
        """How many bytes of an upload the server has (tus HEAD)."""
        response = self.request("HEAD", c.path_of("upload_offset", upload_id=upload_id),
                                headers={"Tus-Resumable": c.TUS_VERSION})
        return c.offset_of(response)

    def _send_upload(self, upload_id: str, fh: BinaryIO, start: int, size: int, on_progress: Progress | None,
                     offset: int) -> None:
        failures = 0
        while offset < size:
            length = min(self.chunk_size, size - offset)
            try:
                offset = self._patch(upload_id, fh, start, offset, length, size, on_progress)
                failures = 0
                continue
            except (APIConnectionError, ConflictError, RateLimitError, ServiceUnavailableError) as exc:
                # a broken connection, another writer still finishing, or "busy, come back": resume from the offset
                failures += 1
                if failures > self.max_reconnects:
                    raise UploadError(f"upload {upload_id} stopped at byte {offset} of {size}: {exc}") from exc
                wait = c.upload_backoff(failures, exc)
            time.sleep(wait)
            offset = self._resume_offset(upload_id, failures)
            if on_progress:
                on_progress(offset, size)

    def _resume_offset(self, upload_id: str, failures: int) -> int:
        try:
            return self.upload_offset(upload_id)
        except APIConnectionError as exc:
            if failures >= self.max_reconnects:
                raise UploadError(f"upload {upload_id}: the server cannot be reached: {exc}") from exc
            time.sleep(1.0)
            return self._resume_offset(upload_id, failures + 1)

    def _patch(self, upload_id: str, fh: BinaryIO, start: int, offset: int, length: int, size: int,
               on_progress: Progress | None) -> int:
        def body() -> Iterator[bytes]:
            fh.seek(start + offset)
            left, sent = length, offset
            while left > 0:
                chunk = fh.read(min(c.READ_SIZE, left))
                if not chunk:
                    raise UploadError("the file got shorter while it was being uploaded")
                left -= len(chunk)
                sent += len(chunk)
                yield chunk
                if on_progress:
                    on_progress(sent, size)

        response = self.request("PATCH", c.path_of("upload_append", upload_id=upload_id), retry=False, headers={
            "Tus-Resumable": c.TUS_VERSION, "Upload-Offset": str(offset), "Content-Type": c.OCTETS,
            "Content-Length": str(length)}, content=body())
        return c.offset_of(response)

    # ------------------------------------------------------------------ jobs
    def job(self, job_id: int) -> m.Job:
        """A job with its steps, outputs and events."""
        return m.Job.from_api(self._call("job", job_id=job_id))

    def jobs(self, *, status: str | None = None, workflow: str | None = None, queue: str | None = None,
             submitter: str | None = None, since: str | None = None, until: str | None = None,
             shadow: bool = False, page_size: int = 100, limit: int | None = None) -> Iterator[m.JobSummary]:
        """Jobs newest first, fetched a keyset page at a time (``limit`` caps the total)."""
        before: int | None = None
        seen = 0
        while True:
            size = min(page_size, limit - seen) if limit is not None else page_size
            if size <= 0:
                return
            page = self._call("jobs", params=c.query(status=status, workflow=workflow, queue=queue,
                                                     submitter=submitter, since=since, until=until, limit=size,
                                                     before_id=before, shadow=shadow or None))
            for item in page["items"]:
                seen += 1
                yield m.JobSummary.from_api(item)
            before = page.get("next_before_id")
            if before is None:
                return

    def cancel(self, job_id: int) -> m.StatusResult:
        """Cancel a job (at once when waiting, at the next step boundary when running)."""
        return m.StatusResult.from_api(self._call("cancel", job_id=job_id))

    def retry(self, job_id: int, version: int | None = None) -> m.StatusResult:
        """Re-run a failed, partial or cancelled job from the step that did not complete."""
        body = {"version": version} if version is not None else None
        return m.StatusResult.from_api(self._call("retry", job_id=job_id, json=body))

    def set_priority(self, job_id: int, priority: int) -> m.JobPriority:
        """Change the priority of a waiting job."""
        return m.JobPriority.from_api(self._call("set_priority", job_id=job_id, json={"priority": priority}))

    def outputs(self, job_id: int) -> list[m.Output]:
        """The files a job produced, with their download URLs."""
        return [m.Output.from_api(o) for o in self._call("outputs", job_id=job_id)["items"]]

    # ------------------------------------------------------------------ events / wait
    def events(self, job_id: int, *, after: int | None = None) -> Iterator[m.Event]:
        """A job's events, live, ending after its final status. A dropped stream reconnects with
        ``Last-Event-ID``: no event is missed or repeated. ``after`` resumes after that event id."""
        return self._events(job_id, after, None)

    def _events(self, job_id: int, after: int | None, deadline: float | None) -> Iterator[m.Event]:
        """``events``, stopping quietly at ``deadline`` (a ``time.monotonic()`` value) when one is given."""
        last, failures = after, 0
        while not _passed(deadline):
            decoder = c.SSEDecoder()
            try:
                for event in self._stream_once(job_id, last, decoder, deadline):
                    last, failures = event.id, 0
                    yield event
                    if isinstance(event, m.StatusEvent) and event.final:
                        return
            except httpx.TransportError as exc:
                if _passed(deadline):
                    return
                failures += 1
                if failures > self.max_reconnects:
                    raise APIConnectionError(f"the event stream of job {job_id} keeps failing: {exc}") from exc
            else:
                if _passed(deadline) or self.job(job_id).done:  # the final event was delivered earlier
                    return
            time.sleep(min(decoder.retry_ms or 1000, 5000, _left(deadline) * 1000) / 1000)

    def _stream_once(self, job_id: int, last: int | None, decoder: c.SSEDecoder,
                     deadline: float | None) -> Iterator[m.Event]:
        headers = {**self._headers, "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last:
            headers["Last-Event-ID"] = str(last)
        # the server sends a keep-alive every 15 s, so a minute of silence is a dead connection
        timeout = httpx.Timeout(10.0, read=max(0.1, min(60.0, _left(deadline))))
        with self._http.stream("GET", self.url + c.path_of("events", job_id=job_id), headers=headers,
                               timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from_response(response)
            for line in response.iter_lines():
                frame = decoder.feed(line)
                event = c.parse_event(frame) if frame else None
                if event is not None and (last is None or event.id > last):
                    last = event.id
                    yield event
                if _passed(deadline):
                    return

    def wait(self, job_id: int, timeout: float | None = None,
             on_event: Callable[[m.Event], None] | None = None) -> m.Job:
        """Follow the job's events until it ends and return it (``WaitTimeout`` after ``timeout`` s)."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        job = self.job(job_id)
        if job.done:
            return job
        for event in self._events(job_id, None, deadline):
            if on_event:
                on_event(event)
        job = self.job(job_id)
        if not job.done:
            raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout} s", job)
        return job

    # ------------------------------------------------------------------ downloads
    def download(self, job_id: int, name: str, dest: str | os.PathLike[str] | BinaryIO) -> Path | None:
        """Download one output to ``dest`` (an existing folder or a str ending in "/", a file path, or a
        binary file object), following
        a presigned redirect (to S3) without sending the API key there. Returns the path written."""
        return self._download(c.path_of("download", job_id=job_id, name=name), name, dest)

    def download_input(self, job_id: int, dest: str | os.PathLike[str] | BinaryIO) -> Path | None:
        """Download the job's original input."""
        return self._download(c.path_of("download_input", job_id=job_id), None, dest)

    def _download(self, path: str, name: str | None, dest: str | os.PathLike[str] | BinaryIO) -> Path | None:
        try:
            return self._download_once(path, name, dest)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"download {path}: {exc or type(exc).__name__}") from exc

    def _download_once(self, path: str, name: str | None, dest: str | os.PathLike[str] | BinaryIO) -> Path | None:
        url, headers = self.url + path, dict(self._headers)
        for _ in range(5):
            with self._http.stream("GET", url, headers=headers) as response:
                if response.is_redirect and "location" in response.headers:
                    url = str(response.url.join(response.headers["location"]))
                    headers = {"User-Agent": self._headers["User-Agent"]}  # a presigned URL carries its own auth
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                filename = name or c.filename_from_disposition(response.headers.get("content-disposition"))
                return _write_body(response, dest, filename or "download")
        raise APIError(310, title="too many redirects", detail=f"{path} redirected more than 5 times")

    # ------------------------------------------------------------------ review and reprocess
    def route(self, job_id: int, workflow: str, version: int | None = None) -> dict[str, Any]:
        """Send a job waiting in review to ``workflow`` (same id, same input)."""
        body = {k: v for k, v in {"workflow": workflow, "version": version}.items() if v is not None}
        return dict(self._call("route", job_id=job_id, json=body))

    def reprocess(self, job_id: int, steps: str = "failed", version: int | None = None) -> dict[str, Any]:
        """Re-run the failed (or ``skipped``, or ``all``) steps of a finished job, keeping the others' outputs."""
        body = {k: v for k, v in {"steps": steps, "version": version}.items() if v is not None}
        return dict(self._call("reprocess", job_id=job_id, json=body))

    def reprocess_many(self, *, workflow: str | None = None, status: list[str] | None = None,
                       step: str | None = None, since: str | None = None, steps: str = "failed",
                       version: int | None = None, limit: int | None = None,
                       dry_run: bool = False) -> dict[str, Any]:
        """Reprocess every finished job matching the filters (``dry_run`` counts them); returns ``count``."""
        body = {"workflow": workflow, "status": status, "step": step, "since": since, "steps": steps,
                "version": version, "limit": limit, "dry_run": dry_run or None}
        return dict(self._call("reprocess_many", json={k: v for k, v in body.items() if v is not None}))

    # ------------------------------------------------------------------ operations
    def queues(self) -> list[m.Queue]:
        return [m.Queue.from_api(q) for q in self._call("queues")["items"]]

    def pause_queue(self, name: str) -> None:
        self._call("queue_pause", name=name)

    def resume_queue(self, name: str) -> None:
        self._call("queue_resume", name=name)

    def workers(self) -> list[m.Worker]:
        return [m.Worker.from_api(w) for w in self._call("workers")["items"]]

    def breakers(self) -> list[m.Breaker]:
        return [m.Breaker.from_api(b) for b in self._call("breakers")["items"]]

    def reset_breaker(self, action: str) -> m.BreakerReset:
        return m.BreakerReset.from_api(self._call("breaker_reset", action=action))

    def list_keys(self) -> list[dict[str, Any]]:
        """The API keys of the caller's tenant (never their secrets)."""
        return list(self._call("keys")["items"])

    def create_key(self, role: str, *, tenant: str | None = None, name: str | None = None) -> m.KeyCreated:
        body = {k: v for k, v in {"role": role, "tenant": tenant, "name": name}.items() if v is not None}
        return m.KeyCreated.from_api(self._call("key_create", json=body))

    def revoke_key(self, key_id: int) -> None:
        self._call("key_revoke", key_id=key_id)

    def actions(self, family: str | None = None) -> list[m.ActionInfo]:
        """Every action the server's workers can run (built-in and plug-in), with its parameters."""
        return [m.ActionInfo.from_api(a) for a in self._call("actions", params=c.query(family=family))["items"]]

    def action(self, name: str) -> m.ActionInfo:
        """One action (404 names the closest ones)."""
        return m.ActionInfo.from_api(self._call("action", name=name))

    def find_job(self, code: str) -> m.JobSummary:
        """A job by its code (``JOB-YYYYMMDD-…``): the date in the code narrows the search to one day."""
        import datetime as dt

        parts = code.strip().upper().split("-")
        try:
            day = dt.datetime.strptime(parts[1], "%Y%m%d") if len(parts) == 3 and parts[0] == "JOB" else None
        except ValueError:
            day = None
        if day is None:  # not a job code: no job has it
            raise NotFoundError(404, title="Not found", detail=f"no job {code!r}")
        # a day either side: the code's date is the submitter's clock's, the filter the server's
        since, until = (day - dt.timedelta(days=1)).strftime("%Y-%m-%d"), (day + dt.timedelta(days=2)).strftime(
            "%Y-%m-%d")
        for job in self.jobs(since=since, until=until, page_size=500):
            if job.job_code == code.strip().upper():
                return job
        raise NotFoundError(404, title="Not found", detail=f"no job {code!r}")

    def summary(self, window: str = "24h") -> m.Summary:
        """Jobs submitted and finished in the last ``window`` (1h, 6h, 24h, 7d), error rate and p95 run time."""
        return m.Summary.from_api(self._call("summary", params={"window": window}))

    def me(self) -> m.Me:
        """Who the key belongs to: tenant, role, key id."""
        return m.Me.from_api(self._call("me"))

    def channels(self) -> list[dict[str, Any]]:
        return list(self._call("channels")["items"])

    def create_channel(self, kind: str, config: dict[str, Any], *, name: str | None = None,
                       events: list[str] | None = None, workflow_code: str | None = None) -> dict[str, Any]:
        body = {"kind": kind, "config": config, "name": name, "events": events, "workflow_code": workflow_code}
        return dict(self._call("channel_create", json={k: v for k, v in body.items() if v is not None}))

    def delete_channel(self, channel_id: int) -> None:
        self._call("channel_delete", channel_id=channel_id)

    def test_channel(self, channel_id: int) -> dict[str, Any]:
        return dict(self._call("channel_test", channel_id=channel_id))

    def rotate_channel_secret(self, channel_id: int, overlap_seconds: int = 86400) -> dict[str, Any]:
        return dict(self._call("channel_rotate", channel_id=channel_id,
                               params={"overlap_seconds": overlap_seconds}))

    def notifications(self, *, status: str | None = None, event_type: str | None = None,
                      job_id: int | None = None, include_events: bool = False,
                      limit: int = 50) -> list[dict[str, Any]]:
        params = c.query(status=status, event_type=event_type, job_id=job_id,
                         include_events=include_events or None, limit=limit)
        return list(self._call("notifications", params=params)["items"])

    def replay_notification(self, notification_id: int) -> dict[str, Any]:
        return dict(self._call("notification_replay", notification_id=notification_id))

    def alerts(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return list(self._call("alerts", params=c.query(state=state, limit=limit))["items"])


class Workflows:
    """``client.workflows``: list, get, versions, apply, validate, diff, activate, deactivate."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[m.Workflow]:
        return [m.Workflow.from_api(w) for w in self._c._call("workflows")["items"]]

    def get(self, code: str, version: int | None = None) -> m.WorkflowDefinition:
        return m.WorkflowDefinition.from_api(self._c._call("workflow", code=code, params=c.query(version=version)))

    def versions(self, code: str) -> builtins.list[m.WorkflowVersion]:
        return [m.WorkflowVersion.from_api(v) for v in self._c._call("workflow_versions", code=code)["items"]]

    def apply(self, document: Document, *, comment: str | None = None, activate: bool = True,
              shared: bool = False) -> m.WorkflowSaved:
        """Save a workflow document (YAML/JSON text, a file path or a dict): version 1 of a new code,
        else a new version (identical content reuses the existing version)."""
        content, ctype = _document(document)
        try:
            data = self._c._call("workflow_create", content=content, headers={"Content-Type": ctype},
                                 params=c.query(comment=comment, shared=shared or None))
        except ConflictError:
            code = self.validate(document).code
            if not code:
                raise
            data = self._c._call("workflow_update", code=code, content=content, headers={"Content-Type": ctype},
                                 params=c.query(comment=comment, activate=activate))
        return m.WorkflowSaved.from_api(data)

    def validate(self, document: Document) -> m.WorkflowValidation:
        """Dry run: whether the document is valid, and its located problems when not."""
        content, ctype = _document(document)
        return m.WorkflowValidation.from_api(
            self._c._call("workflow_validate", content=content, headers={"Content-Type": ctype}))

    def diff(self, code: str, from_version: int, to_version: int) -> m.WorkflowDiff:
        return m.WorkflowDiff.from_api(self._c._call("workflow_diff", code=code,
                                                     params={"from": from_version, "to": to_version}))

    def activate(self, code: str, version: int) -> m.WorkflowActivation:
        """Make ``version`` current (an older one is a rollback)."""
        return m.WorkflowActivation.from_api(self._c._call("workflow_activate", code=code, json={"version": version}))

    def deactivate(self, code: str) -> m.WorkflowActivation:
        return m.WorkflowActivation.from_api(self._c._call("workflow_deactivate", code=code))


class DeadLetters:
    """``client.dead_letters``: list, retry one, retry all matching, discard."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self, *, error_class: str | None = None, workflow: str | None = None, include_resolved: bool = False,
             page_size: int = 100, limit: int | None = None) -> Iterator[m.DeadLetter]:
        before: int | None = None
        seen = 0
        while True:
            size = min(page_size, limit - seen) if limit is not None else page_size
            if size <= 0:
                return
            page = self._c._call("dead_letters", params=c.query(
                error_class=error_class, workflow=workflow, include_resolved=include_resolved or None, limit=size,
                before_id=before))["items"]
            for item in page:
                seen += 1
                yield m.DeadLetter.from_api(item)
            if len(page) < size:
                return
            before = page[-1]["id"]

    def retry(self, dl_id: int, version: int | None = None) -> int:
        """Re-queue one dead-lettered job; returns its job id."""
        body = {"version": version} if version is not None else None
        return m.JobId.from_api(self._c._call("dead_letter_retry", dl_id=dl_id, json=body)).job_id

    def retry_all(self, *, error_class: str | None = None, workflow: str | None = None,
                  version: int | None = None) -> int:
        """Retry every open dead letter matching the filter; returns how many."""
        body = {k: v for k, v in {"error_class": error_class, "workflow": workflow, "version": version}.items()
                if v is not None}
        return m.Count.from_api(self._c._call("dead_letters_retry", json=body)).count

    def discard(self, dl_id: int) -> None:
        self._c._call("dead_letter_discard", dl_id=dl_id)


def _left(deadline: float | None) -> float:
    """Seconds until ``deadline`` (infinite without one)."""
    return float("inf") if deadline is None else max(0.0, deadline - time.monotonic())


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _document(document: Document) -> tuple[bytes, str]:
    """A workflow document as (bytes, content type)."""
    import json

    if isinstance(document, dict):
        return json.dumps(document).encode(), "application/json"
    if isinstance(document, os.PathLike) or (isinstance(document, str) and "\n" not in document
                                             and Path(document).is_file()):
        path = Path(document)
        return path.read_bytes(), "application/json" if path.suffix == ".json" else "application/yaml"
    return str(document).encode(), "application/yaml"


def _write_body(response: httpx.Response, dest: str | os.PathLike[str] | BinaryIO, filename: str) -> Path | None:
    """Stream a response body to a folder, a file path (atomically) or a file object."""
    if not isinstance(dest, str | os.PathLike):
        for chunk in response.iter_bytes():
            dest.write(chunk)
        return None
    target = Path(dest)
    if target.is_dir() or str(dest).endswith(os.sep):
        target.mkdir(parents=True, exist_ok=True)
        target = target / Path(filename).name
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in response.iter_bytes():
                fh.write(chunk)
        expected = response.headers.get("content-length")
        if expected is not None and not response.headers.get("content-encoding") \
                and Path(tmp).stat().st_size != int(expected):
            raise APIConnectionError(f"the download of {filename} ended early")
        shutil.move(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


__all__ = ["Client", "DeadLetters", "Rollouts", "Routes", "Shadows", "Workflows"]


class Routes:
    """``client.routes``: the tenant's routing rules (where a job without a workflow goes)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> builtins.list[dict[str, Any]]:
        """The rules in the order they are evaluated (first match wins)."""
        return builtins.list(self._c._call("routing_rules")["items"])

    def create(self, name: str, condition: str, workflow: str, *, version: int | None = None,
               position: int | None = None, enabled: bool = True) -> dict[str, Any]:
        """Add a rule (a broken condition is a 422 naming its position)."""
        body = {"name": name, "condition": condition, "workflow": workflow, "version": version,
                "position": position, "enabled": enabled}
        return dict(self._c._call("routing_rule_create", json={k: v for k, v in body.items() if v is not None}))

    def get(self, rule_id: int) -> dict[str, Any]:
        return dict(self._c._call("routing_rule", rule_id=rule_id))

    def update(self, rule_id: int, **changes: Any) -> dict[str, Any]:
        """Change some fields (name, condition, workflow, version, position, enabled)."""
        return dict(self._c._call("routing_rule_update", rule_id=rule_id, json=changes))

    def delete(self, rule_id: int) -> None:
        self._c._call("routing_rule_delete", rule_id=rule_id)

    def reorder(self, ids: builtins.list[int]) -> builtins.list[dict[str, Any]]:
        """Set the evaluation order (every rule id once)."""
        return builtins.list(self._c._call("routing_reorder", json={"ids": ids})["items"])

    def explain(self, *, filename: str | None = None, mime: str | None = None, size: int | None = None,
                metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Where a submission like this would go now, with every condition evaluated on the way."""
        body = {"filename": filename, "mime": mime, "size": size, "metadata": metadata}
        return dict(self._c._call("routing_explain", json={k: v for k, v in body.items() if v is not None}))


class Rollouts:
    """``client.rollouts``: staged rollouts of a candidate version (a share of new jobs runs it)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def start(self, code: str, version: int, percent: float, *, max_failure_delta: float | None = None,
              min_jobs: int = 20) -> dict[str, Any]:
        """Send ``percent`` of new jobs to ``version`` (again: change the share); the guard aborts by itself."""
        body: dict[str, Any] = {"version": version, "percent": percent}
        if max_failure_delta is not None:
            body["guard"] = {"max_failure_delta": max_failure_delta, "min_jobs": min_jobs}
        return dict(self._c._call("rollout_start", code=code, json=body))

    def status(self, code: str) -> dict[str, Any]:
        return dict(self._c._call("rollout", code=code))

    def promote(self, code: str) -> dict[str, Any]:
        return dict(self._c._call("rollout_promote", code=code))

    def abort(self, code: str) -> dict[str, Any]:
        return dict(self._c._call("rollout_abort", code=code) or {})


class Shadows:
    """``client.shadows``: shadow runs (a share of new jobs also runs, invisibly, on a candidate)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def start(self, code: str, version: int, percent: float) -> dict[str, Any]:
        body = {"version": version, "sample_percent": percent}
        return dict(self._c._call("shadow_start", code=code, json=body))

    def status(self, code: str) -> dict[str, Any]:
        return dict(self._c._call("shadow", code=code))

    def stop(self, code: str) -> dict[str, Any]:
        return dict(self._c._call("shadow_stop", code=code) or {})

    def promote(self, code: str) -> dict[str, Any]:
        return dict(self._c._call("shadow_promote", code=code))

    def report(self, code: str, version: int | None = None) -> dict[str, Any]:
        """The active version and the candidate compared over the shadowed jobs."""
        return dict(self._c._call("shadow_report", code=code, params=c.query(version=version)))
