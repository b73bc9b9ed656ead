"""The asyncio client: the same methods as :class:`~mediamill.client.Client`, awaitable."""

from __future__ import annotations

import asyncio
import builtins
import os
import time
from collections.abc import AsyncIterator, Callable
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
from mediamill.client.sync import Document, Progress, Source, _document

DEFAULT_READ = 60.0  # the server sends an SSE keep-alive every 15 s


class AsyncClient:
    """An asyncio client of one mediamill server (``async with AsyncClient(url, key) as mm: …``)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout = c.DEFAULT_TIMEOUT, retry: c.RetryPolicy | None = None,
                 chunk_size: int = c.DEFAULT_CHUNK, max_reconnects: int = 10, user_agent: str | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.url, self.api_key = c.resolve_credentials(url, api_key)
        self.retry_policy = retry
        self.chunk_size = chunk_size
        self.max_reconnects = max_reconnects
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._headers = c.base_headers(self.api_key, user_agent)
        self.workflows = AsyncWorkflows(self)
        self.dead_letters = AsyncDeadLetters(self)
        self.routes = AsyncRoutes(self)
        self.rollouts = AsyncRollouts(self)
        self.shadows = AsyncShadows(self)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """Send one request; an error answer raises its :class:`APIError` (see ``Client.request``)."""
        headers = {**self._headers, **(kwargs.pop("headers", None) or {})}
        url = path if path.startswith(("http://", "https://")) else self.url + path
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                delay = self._delay(attempt, None) if retry and isinstance(exc, httpx.ConnectError) else None
                if delay is None:
                    raise APIConnectionError(f"{method} {url}: {exc or type(exc).__name__}") from exc
                await asyncio.sleep(delay)
                continue
            if response.status_code < 400:
                return response
            error = error_from_response(response)
            delay = self._delay(attempt, error) if retry else None
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, error: APIError | None) -> float | None:
        return self.retry_policy.delay(attempt, error) if self.retry_policy else None

    async def _call(self, name: str, /, *, params: dict[str, Any] | None = None, json: Any = None,
                    headers: dict[str, str] | None = None, content: Any = None, **path: Any) -> Any:
        endpoint = c.ENDPOINTS[name]
        response = await self.request(endpoint.method, c.path_of(name, **path), params=params, json=json,
                                      headers=headers, content=content)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # ------------------------------------------------------------------ submit
    async def submit(self, source: Source, workflow: str | None = None, priority: int | None = None,
                     metadata: dict[str, Any] | None = None, idempotency_key: str | None = None, *,
                     params: dict[str, Any] | None = None, version: int | None = None,
                     notify: dict[str, Any] | None = None, filename: str | None = None,
                     on_upload_progress: Progress | None = None) -> m.JobAccepted:
        """Upload over tus (resuming after dropped connections) and submit the file as a job."""
        upload_id = await self.upload(source, filename=filename, on_progress=on_upload_progress)
        body = c.submit_body(upload_id=upload_id, workflow=workflow, priority=priority, metadata=metadata,
                             params=params, version=version, notify=notify)
        return m.JobAccepted.from_api(await self._call("submit", json=body,
                                                       headers=c.idempotency_headers(idempotency_key)))

    async def submit_url(self, url: str, workflow: str | None = None, priority: int | None = None,
                         metadata: dict[str, Any] | None = None, idempotency_key: str | None = None, *,
                         params: dict[str, Any] | None = None, filename: str | None = None) -> m.JobAccepted:
        body = c.submit_body(url=url, workflow=workflow, priority=priority, metadata=metadata, params=params,
                             filename=filename)
        return m.JobAccepted.from_api(await self._call("submit", json=body,
                                                       headers=c.idempotency_headers(idempotency_key)))

    async def upload(self, source: Source, *, filename: str | None = None, on_progress: Progress | None = None,
                     upload_id: str | None = None) -> str:
        """Upload with tus (resuming after dropped connections; ``upload_id`` continues an earlier upload)."""
        fh, size, name, owned = c.upload_source(source, filename)
        try:
            start = fh.tell()
            if upload_id is None:
                created = await self.request("POST", c.path_of("upload_create"), headers={
                    "Tus-Resumable": c.TUS_VERSION, "Upload-Length": str(size),
                    "Upload-Metadata": c.tus_metadata({"filename": name})})
                upload_id = c.upload_id_of(created.headers.get("location", ""))
                offset = 0
            else:
                offset = await self.upload_offset(upload_id)
            if on_progress:
                on_progress(offset, size)
            failures = 0
            while offset < size:
                try:
                    offset = await self._patch(upload_id, fh, start, offset, min(self.chunk_size, size - offset),
                                               size, on_progress)
                    failures = 0
                    continue
                except (APIConnectionError, ConflictError, RateLimitError, ServiceUnavailableError) as exc:
                    # a broken connection, another writer still finishing, or "busy, come back": resume
                    failures += 1
                    if failures > self.max_reconnects:
                        raise UploadError(f"upload {upload_id} stopped at byte {offset} of {size}: {exc}") from exc
                    wait = c.upload_backoff(failures, exc)
                await asyncio.sleep(wait)
                offset = await self.upload_offset(upload_id)
                if on_progress:
                    on_progress(offset, size)
            return upload_id
        finally:
            if owned:
                fh.close()

    async def upload_offset(self, upload_id: str) -> int:
        response = await self.request("HEAD", c.path_of("upload_offset", upload_id=upload_id),
                                      headers={"Tus-Resumable": c.TUS_VERSION})
        return c.offset_of(response)

    async def _patch(self, upload_id: str, fh: BinaryIO, start: int, offset: int, length: int, size: int,
                     on_progress: Progress | None) -> int:
        async def body() -> AsyncIterator[bytes]:
            fh.seek(start + offset)
            left, sent = length, offset
            while left > 0:
                chunk = await asyncio.to_thread(fh.read, min(c.READ_SIZE, left))
                if not chunk:
                    raise UploadError("the file got shorter while it was being uploaded")
                left -= len(chunk)
                sent += len(chunk)
                yield chunk
                if on_progress:
                    on_progress(sent, size)

        response = await self.request("PATCH", c.path_of("upload_append", upload_id=upload_id), retry=False,
                                      headers={"Tus-Resumable": c.TUS_VERSION, "Upload-Offset": str(offset),
                                               "Content-Type": c.OCTETS, "Content-Length": str(length)},
                                      content=body())
        return c.offset_of(response)

    # ------------------------------------------------------------------ jobs
    async def job(self, job_id: int) -> m.Job:
        return m.Job.from_api(await self._call("job", job_id=job_id))

    async def jobs(self, *, status: str | None = None, workflow: str | None = None, queue: str | None = None,
                   submitter: str | None = None, since: str | None = None, until: str | None = None,
                   shadow: bool = False, page_size: int = 100,
                   limit: int | None = None) -> AsyncIterator[m.JobSummary]:
        """Jobs newest first over keyset pages (``async for job in mm.jobs(): …``)."""
        before: int | None = None
        seen = 0
        while True:
            size = min(page_size, limit - seen) if limit is not None else page_size
            if size <= 0:
                return
            page = await self._call("jobs", params=c.query(status=status, workflow=workflow, queue=queue,
                                                           submitter=submitter, since=since, until=until,
                                                           limit=size, before_id=before, shadow=shadow or None))
            for item in page["items"]:
                seen += 1
                yield m.JobSummary.from_api(item)
            before = page.get("next_before_id")
            if before is None:
                return

    async def cancel(self, job_id: int) -> m.StatusResult:
        return m.StatusResult.from_api(await self._call("cancel", job_id=job_id))

    async def retry(self, job_id: int, version: int | None = None) -> m.StatusResult:
        body = {"version": version} if version is not None else None
        return m.StatusResult.from_api(await self._call("retry", job_id=job_id, json=body))

    async def set_priority(self, job_id: int, priority: int) -> m.JobPriority:
        return m.JobPriority.from_api(await self._call("set_priority", job_id=job_id, json={"priority": priority}))

    async def outputs(self, job_id: int) -> list[m.Output]:
        return [m.Output.from_api(o) for o in (await self._call("outputs", job_id=job_id))["items"]]

    # ------------------------------------------------------------------ events / wait
    async def events(self, job_id: int, *, after: int | None = None) -> AsyncIterator[m.Event]:
        """A job's events, live, until its final status; reconnects with ``Last-Event-ID``."""
        last, failures = after, 0
        while True:
            decoder = c.SSEDecoder()
            try:
                async for event in self._stream_once(job_id, last, decoder):
                    last, failures = event.id, 0
                    yield event
                    if isinstance(event, m.StatusEvent) and event.final:
                        return
            except httpx.TransportError as exc:
                failures += 1
                if failures > self.max_reconnects:
                    raise APIConnectionError(f"the event stream of job {job_id} keeps failing: {exc}") from exc
            else:
                if (await self.job(job_id)).done:
                    return
            await asyncio.sleep(min(decoder.retry_ms or 1000, 5000) / 1000)

    async def _stream_once(self, job_id: int, last: int | None, decoder: c.SSEDecoder) -> AsyncIterator[m.Event]:
        headers = {**self._headers, "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last:
            headers["Last-Event-ID"] = str(last)
        timeout = httpx.Timeout(10.0, read=DEFAULT_READ)
        async with self._http.stream("GET", self.url + c.path_of("events", job_id=job_id), headers=headers,
                                     timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_from_response(response)
            async for line in response.aiter_lines():
                frame = decoder.feed(line)
                event = c.parse_event(frame) if frame else None
                if event is not None and (last is None or event.id > last):
                    last = event.id
                    yield event

    async def wait(self, job_id: int, timeout: float | None = None,
                   on_event: Callable[[m.Event], None] | None = None) -> m.Job:
        """Follow the job until it ends and return it (``WaitTimeout`` after ``timeout`` s)."""
        job = await self.job(job_id)
        if job.done:
            return job

        async def follow() -> None:
            async for event in self.events(job_id):
                if on_event:
                    on_event(event)

        started = time.monotonic()
        try:
            await asyncio.wait_for(follow(), timeout)
        except TimeoutError:
            pass
        job = await self.job(job_id)
        if not job.done:
            raise WaitTimeout(f"job {job_id} is still {job.status} after {time.monotonic() - started:.0f} s", job)
        return job

    # ------------------------------------------------------------------ downloads
    async def download(self, job_id: int, name: str, dest: str | os.PathLike[str] | BinaryIO) -> Path | None:
        """Download one output (following a presigned redirect without the API key)."""
        return await self._download(c.path_of("download", job_id=job_id, name=name), name, dest)

    async def download_input(self, job_id: int, dest: str | os.PathLike[str] | BinaryIO) -> Path | None:
        return await self._download(c.path_of("download_input", job_id=job_id), None, dest)

    async def _download(self, path: str, name: str | None, dest: str | os.PathLike[str] | BinaryIO) -> Path | None:
        url, headers = self.url + path, dict(self._headers)
        try:
            for _ in range(5):
                async with self._http.stream("GET", url, headers=headers) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        headers = {"User-Agent": self._headers["User-Agent"]}
                        continue
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    body = await response.aread()  # outputs are read whole, then written like the sync client
                    filename = name or c.filename_from_disposition(response.headers.get("content-disposition"))
                    return await asyncio.to_thread(_write_bytes, body, dest, filename or "download")
        except httpx.TransportError as exc:
            raise APIConnectionError(f"download {path}: {exc or type(exc).__name__}") from exc
        raise APIError(310, title="too many redirects", detail=f"{path} redirected more than 5 times")

    # ------------------------------------------------------------------ review and reprocess
    async def route(self, job_id: int, workflow: str, version: int | None = None) -> dict[str, Any]:
        """Send a job waiting in review to ``workflow`` (same id, same input)."""
        body = {k: v for k, v in {"workflow": workflow, "version": version}.items() if v is not None}
        return dict(await self._call("route", job_id=job_id, json=body))

    async def reprocess(self, job_id: int, steps: str = "failed", version: int | None = None) -> dict[str, Any]:
        """Re-run the failed (or ``skipped``, or ``all``) steps of a finished job, keeping the others' outputs."""
        body = {k: v for k, v in {"steps": steps, "version": version}.items() if v is not None}
        return dict(await self._call("reprocess", job_id=job_id, json=body))

    async def reprocess_many(self, *, workflow: str | None = None, status: list[str] | None = None,
                       step: str | None = None, since: str | None = None, steps: str = "failed",
                       version: int | None = None, limit: int | None = None,
                       dry_run: bool = False) -> dict[str, Any]:
        """Reprocess every finished job matching the filters (``dry_run`` counts them); returns ``count``."""
        body = {"workflow": workflow, "status": status, "step": step, "since": since, "steps": steps,
                "version": version, "limit": limit, "dry_run": dry_run or None}
        return dict(await self._call("reprocess_many", json={k: v for k, v in body.items() if v is not None}))

    # ------------------------------------------------------------------ operations
    async def queues(self) -> list[m.Queue]:
        return [m.Queue.from_api(q) for q in (await self._call("queues"))["items"]]

    async def pause_queue(self, name: str) -> None:
        await self._call("queue_pause", name=name)

    async def resume_queue(self, name: str) -> None:
        await self._call("queue_resume", name=name)

    async def workers(self) -> list[m.Worker]:
        return [m.Worker.from_api(w) for w in (await self._call("workers"))["items"]]

    async def breakers(self) -> list[m.Breaker]:
        return [m.Breaker.from_api(b) for b in (await self._call("breakers"))["items"]]

    async def reset_breaker(self, action: str) -> m.BreakerReset:
        return m.BreakerReset.from_api(await self._call("breaker_reset", action=action))

    async def actions(self, family: str | None = None) -> list[m.ActionInfo]:
        return [m.ActionInfo.from_api(a) for a in (await self._call("actions", params=c.query(family=family)))["items"]]

    async def action(self, name: str) -> m.ActionInfo:
        return m.ActionInfo.from_api(await self._call("action", name=name))

    async def find_job(self, code: str) -> m.JobSummary:
        """A job by its code (see ``Client.find_job``)."""
        import datetime as dt

        parts = code.strip().upper().split("-")
        try:
            day = dt.datetime.strptime(parts[1], "%Y%m%d") if len(parts) == 3 and parts[0] == "JOB" else None
        except ValueError:
            day = None
        if day is None:  # not a job code: no job has it
            raise NotFoundError(404, title="Not found", detail=f"no job {code!r}")
        since, until = (day - dt.timedelta(days=1)).strftime("%Y-%m-%d"), (day + dt.timedelta(days=2)).strftime(
            "%Y-%m-%d")
        async for job in self.jobs(since=since, until=until, page_size=500):
            if job.job_code == code.strip().upper():
                return job
        raise NotFoundError(404, title="Not found", detail=f"no job {code!r}")

    async def summary(self, window: str = "24h") -> m.Summary:
        """Jobs submitted and finished in the last ``window`` (1h, 6h, 24h, 7d), error rate and p95 run time."""
        return m.Summary.from_api(await self._call("summary", params={"window": window}))

    async def me(self) -> m.Me:
        return m.Me.from_api(await self._call("me"))

    async def list_keys(self) -> list[dict[str, Any]]:
        return list((await self._call("keys"))["items"])

    async def create_key(self, role: str, *, tenant: str | None = None, name: str | None = None) -> m.KeyCreated:
        body = {k: v for k, v in {"role": role, "tenant": tenant, "name": name}.items() if v is not None}
        return m.KeyCreated.from_api(await self._call("key_create", json=body))

    async def revoke_key(self, key_id: int) -> None:
        await self._call("key_revoke", key_id=key_id)

    async def channels(self) -> list[dict[str, Any]]:
        return list((await self._call("channels"))["items"])

    async def create_channel(self, kind: str, config: dict[str, Any], *, name: str | None = None,
                             events: list[str] | None = None, workflow_code: str | None = None) -> dict[str, Any]:
        body = {"kind": kind, "config": config, "name": name, "events": events, "workflow_code": workflow_code}
        return dict(await self._call("channel_create", json={k: v for k, v in body.items() if v is not None}))

    async def delete_channel(self, channel_id: int) -> None:
        await self._call("channel_delete", channel_id=channel_id)

    async def test_channel(self, channel_id: int) -> dict[str, Any]:
        return dict(await self._call("channel_test", channel_id=channel_id))

    async def rotate_channel_secret(self, channel_id: int, overlap_seconds: int = 86400) -> dict[str, Any]:
        return dict(await self._call("channel_rotate", channel_id=channel_id,
                                     params={"overlap_seconds": overlap_seconds}))

    async def notifications(self, *, status: str | None = None, event_type: str | None = None,
                            job_id: int | None = None, include_events: bool = False,
                            limit: int = 50) -> list[dict[str, Any]]:
        params = c.query(status=status, event_type=event_type, job_id=job_id,
                         include_events=include_events or None, limit=limit)
        return list((await self._call("notifications", params=params))["items"])

    async def replay_notification(self, notification_id: int) -> dict[str, Any]:
        return dict(await self._call("notification_replay", notification_id=notification_id))

    async def alerts(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return list((await self._call("alerts", params=c.query(state=state, limit=limit)))["items"])


class AsyncWorkflows:
    """``client.workflows`` of the async client."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self) -> list[m.Workflow]:
        return [m.Workflow.from_api(w) for w in (await self._c._call("workflows"))["items"]]

    async def get(self, code: str, version: int | None = None) -> m.WorkflowDefinition:
        return m.WorkflowDefinition.from_api(await self._c._call("workflow", code=code,
                                                                 params=c.query(version=version)))

    async def versions(self, code: str) -> builtins.list[m.WorkflowVersion]:
        return [m.WorkflowVersion.from_api(v) for v in (await self._c._call("workflow_versions", code=code))["items"]]

    async def apply(self, document: Document, *, comment: str | None = None, activate: bool = True,
                    shared: bool = False) -> m.WorkflowSaved:
        content, ctype = _document(document)
        try:
            data = await self._c._call("workflow_create", content=content, headers={"Content-Type": ctype},
                                       params=c.query(comment=comment, shared=shared or None))
        except ConflictError:
            code = (await self.validate(document)).code
            if not code:
                raise
            data = await self._c._call("workflow_update", code=code, content=content,
                                       headers={"Content-Type": ctype},
                                       params=c.query(comment=comment, activate=activate))
        return m.WorkflowSaved.from_api(data)

    async def validate(self, document: Document) -> m.WorkflowValidation:
        content, ctype = _document(document)
        return m.WorkflowValidation.from_api(
            await self._c._call("workflow_validate", content=content, headers={"Content-Type": ctype}))

    async def diff(self, code: str, from_version: int, to_version: int) -> m.WorkflowDiff:
        return m.WorkflowDiff.from_api(await self._c._call("workflow_diff", code=code,
                                                           params={"from": from_version, "to": to_version}))

    async def activate(self, code: str, version: int) -> m.WorkflowActivation:
        return m.WorkflowActivation.from_api(await self._c._call("workflow_activate", code=code,
                                                                 json={"version": version}))

    async def deactivate(self, code: str) -> m.WorkflowActivation:
        return m.WorkflowActivation.from_api(await self._c._call("workflow_deactivate", code=code))


class AsyncDeadLetters:
    """``client.dead_letters`` of the async client."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, *, error_class: str | None = None, workflow: str | None = None,
                   include_resolved: bool = False, page_size: int = 100,
                   limit: int | None = None) -> AsyncIterator[m.DeadLetter]:
        """Dead letters newest first over keyset pages (``async for dl in mm.dead_letters.list(): …``)."""
        before: int | None = None
        seen = 0
        while True:
            size = min(page_size, limit - seen) if limit is not None else page_size
            if size <= 0:
                return
            page = (await self._c._call("dead_letters", params=c.query(
                error_class=error_class, workflow=workflow, include_resolved=include_resolved or None, limit=size,
                before_id=before)))["items"]
            for item in page:
                seen += 1
                yield m.DeadLetter.from_api(item)
            if len(page) < size:
                return
            before = page[-1]["id"]

    async def retry(self, dl_id: int, version: int | None = None) -> int:
        body = {"version": version} if version is not None else None
        return m.JobId.from_api(await self._c._call("dead_letter_retry", dl_id=dl_id, json=body)).job_id

    async def retry_all(self, *, error_class: str | None = None, workflow: str | None = None,
                        version: int | None = None) -> int:
        body = {k: v for k, v in {"error_class": error_class, "workflow": workflow, "version": version}.items()
                if v is not None}
        return m.Count.from_api(await self._c._call("dead_letters_retry", json=body)).count

    async def discard(self, dl_id: int) -> None:
        await self._c._call("dead_letter_discard", dl_id=dl_id)


def _write_bytes(body: bytes, dest: str | os.PathLike[str] | BinaryIO, filename: str) -> Path | None:
    if not isinstance(dest, str | os.PathLike):
        dest.write(body)
        return None
    target = Path(dest)
    if target.is_dir() or str(dest).endswith(os.sep):
        target.mkdir(parents=True, exist_ok=True)
        target = target / Path(filename).name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    tmp.write_bytes(body)
    tmp.replace(target)
    return target


class AsyncRoutes:
    """``client.routes`` (async): the tenant's routing rules (where a job without a workflow goes)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self) -> builtins.list[dict[str, Any]]:
        """The rules in the order they are evaluated (first match wins)."""
        return builtins.list((await self._c._call("routing_rules"))["items"])

    async def create(self, name: str, condition: str, workflow: str, *, version: int | None = None,
               position: int | None = None, enabled: bool = True) -> dict[str, Any]:
        """Add a rule (a broken condition is a 422 naming its position)."""
        body = {"name": name, "condition": condition, "workflow": workflow, "version": version,
                "position": position, "enabled": enabled}
        return dict(await self._c._call("routing_rule_create", json={k: v for k, v in body.items() if v is not None}))

    async def get(self, rule_id: int) -> dict[str, Any]:
        return dict(await self._c._call("routing_rule", rule_id=rule_id))

    async def update(self, rule_id: int, **changes: Any) -> dict[str, Any]:
        """Change some fields (name, condition, workflow, version, position, enabled)."""
        return dict(await self._c._call("routing_rule_update", rule_id=rule_id, json=changes))

    async def delete(self, rule_id: int) -> None:
        await self._c._call("routing_rule_delete", rule_id=rule_id)

    async def reorder(self, ids: builtins.list[int]) -> builtins.list[dict[str, Any]]:
        """Set the evaluation order (every rule id once)."""
        return builtins.list((await self._c._call("routing_reorder", json={"ids": ids}))["items"])

    async def explain(self, *, filename: str | None = None, mime: str | None = None, size: int | None = None,
                metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Where a submission like this would go now, with every condition evaluated on the way."""
        body = {"filename": filename, "mime": mime, "size": size, "metadata": metadata}
        return dict(await self._c._call("routing_explain", json={k: v for k, v in body.items() if v is not None}))


class AsyncRollouts:
    """``client.rollouts`` (async): staged rollouts of a candidate version (a share of new jobs runs it)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def start(self, code: str, version: int, percent: float, *, max_failure_delta: float | None = None,
              min_jobs: int = 20) -> dict[str, Any]:
        """Send ``percent`` of new jobs to ``version`` (again: change the share); the guard aborts by itself."""
        body: dict[str, Any] = {"version": version, "percent": percent}
        if max_failure_delta is not None:
            body["guard"] = {"max_failure_delta": max_failure_delta, "min_jobs": min_jobs}
        return dict(await self._c._call("rollout_start", code=code, json=body))

    async def status(self, code: str) -> dict[str, Any]:
        return dict(await self._c._call("rollout", code=code))

    async def promote(self, code: str) -> dict[str, Any]:
        return dict(await self._c._call("rollout_promote", code=code))

    async def abort(self, code: str) -> dict[str, Any]:
        return dict((await self._c._call("rollout_abort", code=code)) or {})


class AsyncShadows:
    """``client.shadows`` (async): shadow runs (a share of new jobs also runs, invisibly, on a candidate)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def start(self, code: str, version: int, percent: float) -> dict[str, Any]:
        body = {"version": version, "sample_percent": percent}
        return dict(await self._c._call("shadow_start", code=code, json=body))

    async def status(self, code: str) -> dict[str, Any]:
        return dict(await self._c._call("shadow", code=code))

    async def stop(self, code: str) -> dict[str, Any]:
        return dict((await self._c._call("shadow_stop", code=code)) or {})

    async def promote(self, code: str) -> dict[str, Any]:
        return dict(await self._c._call("shadow_promote", code=code))

    async def report(self, code: str, version: int | None = None) -> dict[str, Any]:
        """The active version and the candidate compared over the shadowed jobs."""
        return dict(await self._c._call("shadow_report", code=code, params=c.query(version=version)))
