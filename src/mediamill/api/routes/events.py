"""Server-Sent Events: one job's progress, or everything of the caller's tenant."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

from mediamill.api import auth
from mediamill.api.auth import Caller
from mediamill.api.deps import MAX_ID, blocking, client_int, ops, read_engine, runtime
from mediamill.api.events import EventHub, stream
from mediamill.api.problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1", tags=["events"], responses=PROBLEM_RESPONSES)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: each Server-Sent Event (OpenAPI 3.1 describes one event with the media type's schema): a numeric
#: ``id`` to resume from, the event ``type``, the client's reconnection delay, and a JSON ``JobEvent``
SSE_EVENT = {
    "type": "object", "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "pattern": "^[a-z_]{1,30}$"},
        "retry": {"type": "integer", "minimum": 0},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"$ref": "#/components/schemas/JobEvent"}},
    },
}
SSE_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}},
                 "description": "an event stream: one event per job event (progress, step, status …); "
                                "comment lines keep it alive"}}


LAST_EVENT_ID = Header(None, max_length=16, pattern=r"^[0-9]{1,16}$",
                       description="resume after this event id (what the stream last sent as `id:`)")


def hub(request: Request) -> EventHub:
    existing: EventHub | None = getattr(request.app.state, "event_hub", None)
    if existing is None:
        rt = runtime(request)
        existing = EventHub(read_engine(request), poll_seconds=rt.settings.sse_poll_seconds)
        request.app.state.event_hub = existing
    return existing


def _resume_from(last_event_id: str | None, after: int | None) -> int:
    if last_event_id and last_event_id.strip():
        return client_int(last_event_id, "header.Last-Event-ID", maximum=MAX_ID)
    return after or 0


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse, responses=SSE_DOC)
async def job_events(request: Request, job_id: int = Path(..., ge=1, le=MAX_ID), caller: Caller = auth.Viewer,
                     last_event_id: str | None = LAST_EVENT_ID,
                     after: int | None = Query(None, ge=0, le=MAX_ID, description="resume after this event id")
                     ) -> StreamingResponse:
    """A job's events as SSE; the stream ends after the final status. Resumable with Last-Event-ID."""
    await blocking(ops().get_job, read_engine(request), job_id, tenant_id=caller.tenant_id)  # 404 first
    body = stream(hub(request), tenant_id=caller.tenant_id, job_id=job_id,
                  after_id=_resume_from(last_event_id, after))
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/events", response_class=StreamingResponse, responses=SSE_DOC)
async def tenant_events(request: Request, caller: Caller = auth.Viewer,
                        last_event_id: str | None = LAST_EVENT_ID,
                        after: int | None = Query(None, ge=0, le=MAX_ID)) -> StreamingResponse:
    """Every job event of the caller's tenant as SSE (new events only, unless resuming)."""
    h = hub(request)
    start = _resume_from(last_event_id, after)
    if not start:
        from mediamill.api.events import last_event_id as newest

        start = await blocking(newest, h.engine)
    body = stream(h, tenant_id=caller.tenant_id, job_id=None, after_id=start)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)
