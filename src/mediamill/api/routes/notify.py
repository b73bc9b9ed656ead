"""Notification channels, the delivery log (with replay), event schemas, and alerts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as FPath
from pydantic import BaseModel, ConfigDict, Field

from mediamill.api.auth import Caller, require
from mediamill.notify import alerting, channels, dispatcher, history
from mediamill.notify.events import event_schemas
from mediamill.runtime import Runtime

router = APIRouter(tags=["notifications"])
Viewer = Depends(require("viewer"))
Operator = Depends(require("operator"))
ChannelId = Annotated[int, FPath(ge=1, le=2**53)]
NotificationId = Annotated[int, FPath(ge=1, le=2**53)]


def _rt(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


class ChannelIn(BaseModel):
    """A new channel. ``config`` by kind — webhook: ``{url, headers?}`` (a ``whsec_`` secret is generated);
    email: ``{to: [...], smtp_host?, smtp_port?, starttls?, tls?, username?, password_env?, from?}``;
    slack: ``{url, channel?}``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["webhook", "email", "slack"]
    name: str | None = Field(default=None, max_length=200)
    config: dict[str, Any]
    events: list[str] | None = Field(default=None, description="event types or globs (job.*); null = all")
    workflow_code: str | None = Field(default=None, max_length=50)


class ChannelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    config: dict[str, Any] | None = None
    events: list[str] | None = None
    workflow_code: str | None = Field(default=None, max_length=50)
    enabled: bool | None = None


# --------------------------------------------------------------------------- channels
@router.get("/v1/channels")
def list_channels(request: Request, caller: Caller = Viewer) -> dict[str, Any]:
    """The caller's tenant's channels (secrets masked)."""
    with _rt(request).engine.connect() as conn:
        return {"items": channels.list_channels(conn, caller.tenant_id)}


@router.post("/v1/channels", status_code=201)
def create_channel(body: ChannelIn, request: Request, caller: Caller = Operator) -> dict[str, Any]:
    """Create a channel. The response is the only one that shows a webhook's signing secret."""
    rt = _rt(request)
    with rt.engine.begin() as conn:
        return channels.create_channel(conn, tenant_id=caller.tenant_id, kind=body.kind, name=body.name,
                                       config=body.config, events=body.events, workflow_code=body.workflow_code,
                                       allowlist=rt.settings.url_allowlist, box=rt.secret_box)


@router.get("/v1/channels/{channel_id}")
def get_channel(channel_id: ChannelId, request: Request, caller: Caller = Viewer) -> dict[str, Any]:
    """One channel (secrets masked)."""
    with _rt(request).engine.connect() as conn:
        return channels.public_view(channels.get_channel(conn, caller.tenant_id, channel_id))


@router.patch("/v1/channels/{channel_id}")
def update_channel(channel_id: ChannelId, body: ChannelPatch, request: Request,
                   caller: Caller = Operator) -> dict[str, Any]:
    """Change a channel; ``{"enabled": true}`` re-enables one that a 410 disabled."""
    rt = _rt(request)
    changes = body.model_dump(exclude_unset=True)
    with rt.engine.begin() as conn:
        return channels.update_channel(conn, caller.tenant_id, channel_id, allowlist=rt.settings.url_allowlist,
                                       box=rt.secret_box, **changes)


@router.delete("/v1/channels/{channel_id}", status_code=204)
def delete_channel(channel_id: ChannelId, request: Request, caller: Caller = Operator) -> Response:
    """Delete a channel; its pending deliveries are cancelled."""
    with _rt(request).engine.begin() as conn:
        channels.delete_channel(conn, caller.tenant_id, channel_id)
    return Response(status_code=204)


@router.post("/v1/channels/{channel_id}/test")
def test_channel(channel_id: ChannelId, request: Request, caller: Caller = Operator) -> dict[str, Any]:
    """Send a ``test`` event to the channel now; answers with the outcome of the attempt."""
    from mediamill.notify.delivery import send_test

    rt = _rt(request)
    return send_test(rt.engine, rt.settings, tenant_id=caller.tenant_id, channel_id=channel_id)


@router.post("/v1/channels/{channel_id}/rotate-secret")
def rotate_secret(channel_id: ChannelId, request: Request, caller: Caller = Operator,
                  overlap_seconds: int = Query(86400, ge=0, le=30 * 86400)) -> dict[str, Any]:
    """Add a new signing secret; the old one keeps signing (two signatures) during the overlap."""
    rt = _rt(request)
    with rt.engine.begin() as conn:
        return channels.rotate_secret(conn, caller.tenant_id, channel_id, overlap_seconds=overlap_seconds,
                                      box=rt.secret_box)


# --------------------------------------------------------------------------- delivery log
@router.get("/v1/notifications")
def list_notifications(request: Request, caller: Caller = Viewer,
                       status: Literal["pending", "sent", "failed", "cancelled", "dispatched"] | None = None,
                       event_type: str | None = Query(None, max_length=50),
                       job_id: int | None = Query(None, ge=1, le=2**53),
                       channel_id: int | None = Query(None, ge=1, le=2**53),
                       event_id: str | None = Query(None, max_length=64), include_events: bool = False,
                       before: int | None = Query(None, ge=1, le=2**53, description="keyset: rows with a smaller id"),
                       limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    """The delivery log, newest first; page with ``before=<next_before>``."""
    with _rt(request).engine.connect() as conn:
        items = history.list_notifications(
            conn, tenant_id=caller.tenant_id, status=status, event_type=event_type, job_id=job_id,
            channel_id=channel_id, event_id=event_id, include_events=include_events, before_id=before, limit=limit)
    return {"items": items, "next_before": items[-1]["id"] if len(items) == limit else None}


@router.get("/v1/notifications/schemas")
def notification_schemas(_caller: Caller = Viewer) -> dict[str, Any]:
    """The JSON Schema of every event payload, by event type."""
    return event_schemas()


@router.get("/v1/notifications/signing-secret")
def job_webhook_secret(request: Request, caller: Caller = Operator) -> dict[str, str]:
    """The secret that signs per-job ``notify.webhook`` deliveries of the caller's tenant."""
    from mediamill.notify.senders import job_webhook_secret as secret_for

    return {"secret": secret_for(_rt(request).settings, caller.tenant_id)}


@router.get("/v1/notifications/{notification_id}")
def get_notification(notification_id: NotificationId, request: Request, caller: Caller = Viewer) -> dict[str, Any]:
    """One delivery with its payload and every attempt."""
    with _rt(request).engine.connect() as conn:
        return history.get_notification(conn, notification_id, tenant_id=caller.tenant_id)


@router.post("/v1/notifications/{notification_id}/replay", status_code=202)
def replay_notification(notification_id: NotificationId, request: Request, caller: Caller = Operator) -> dict[str, Any]:
    """Deliver again with the same event id (a new delivery row; an outbox event is re-expanded)."""
    with _rt(request).engine.begin() as conn:
        return dispatcher.replay(conn, notification_id, tenant_id=caller.tenant_id)


# --------------------------------------------------------------------------- alerts
@router.get("/v1/alerts")
def list_alerts(request: Request, caller: Caller = Viewer,
                state: Literal["pending", "firing", "resolved", "active"] | None = None,
                limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    """Alerts of the caller's rules (the root admin: every rule's), newest first, each with its runbook."""
    rt = _rt(request)
    with rt.engine.connect() as conn:
        return {"items": alerting.alerts_for(rt.settings, conn, caller.scope, state=state, limit=limit)}


@router.get("/v1/alerts/rules")
def list_alert_rules(request: Request, caller: Caller = Viewer) -> dict[str, Any]:
    """The rules in force for the caller: its tenant's (the root admin: built-in, file, environment and
    database rules)."""
    rt = _rt(request)
    with rt.engine.connect() as conn:
        rules = alerting.rules_for(rt.settings, conn, caller.scope)
    return {"items": [r.model_dump(by_alias=True) for r in rules]}
