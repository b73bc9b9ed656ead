"""Notification channels (``notification_channels``): per tenant, optionally per workflow, with an
event filter. Config is validated per kind; webhook secrets are generated here and rotated with
two active secrets during the overlap.

Webhook signing secrets are stored encrypted (:class:`mediamill.installkey.SecretBox`, a key
derived from the install key) next to a ``hint`` — their first characters — that masked views
show; only the creating and rotating answers, and the sender, ever open them.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mediamill.errors import InvalidInput, NotFound, locate
from mediamill.installkey import SecretBox
from mediamill.netguard import Allowlist, UrlRefused, check_url
from mediamill.notify.events import EVENT_TYPES, event_matches
from mediamill.store import notify_repo as repo
from mediamill.store.db import Connection, Engine
from mediamill.store.timeutil import iso, utcnow

KINDS = ("webhook", "email", "slack")
Kind = Literal["webhook", "email", "slack"]


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SigningSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret: str
    created_at: str | None = None
    expires_at: str | None = None  # set on the old secret when a new one is rotated in

    @field_validator("secret")
    @classmethod
    def _prefixed(cls, value: str) -> str:
        if not value.startswith("whsec_") or len(value) < 20:
            raise ValueError("secret must look like whsec_<base64>")
        return value


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    secrets: list[SigningSecret] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)


class EmailConfig(BaseModel):
    """Recipients plus optional SMTP overrides (the password only ever by environment variable name)."""

    model_config = ConfigDict(extra="forbid")
    to: list[str] = Field(min_length=1)
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, gt=0)
    starttls: bool | None = None
    tls: bool | None = None
    username: str | None = None
    password_env: str | None = None
    sender: str | None = Field(default=None, alias="from")

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for addr in value:
            if "@" not in addr or any(c in addr for c in "\r\n,;"):
                raise ValueError(f"not an email address: {addr!r}")
        return value


class SlackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    channel: str | None = None


_CONFIG_MODELS: dict[str, type[BaseModel]] = {"webhook": WebhookConfig, "email": EmailConfig,
                                              "slack": SlackConfig}


def validate_config(kind: str, config: dict[str, Any], *, allowlist: Allowlist | str | None) -> dict[str, Any]:
    """Validate a channel config for its kind; URLs pass the SSRF guard. Returns the normalised config."""
    if kind not in _CONFIG_MODELS:
        raise InvalidInput(f"channel kind must be one of {', '.join(KINDS)}, got {kind!r}")
    try:
        model = _CONFIG_MODELS[kind].model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise InvalidInput(f"{kind} channel config.{where}: {first['msg']}") from None
    url = getattr(model, "url", None)
    if url:
        try:
            check_url(url, allowlist)
        except UrlRefused as exc:
            raise locate(exc, "body.config.url") from None
    if isinstance(model, WebhookConfig) and not model.secrets:
        model.secrets = [SigningSecret(secret=new_secret(), created_at=iso(utcnow()))]
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _validate_events(events: list[str] | None) -> list[str] | None:
    if events is None:
        return None
    known = (*EVENT_TYPES, "job.*", "breaker.*", "alert.*", "rollout.*", "source.*", "*")
    for e in events:
        if e not in known:
            raise InvalidInput(f"unknown event {e!r}; expected one of {', '.join(known)}")
    return list(events)


# --------------------------------------------------------------------------- repository
def create_channel(conn: Connection, *, tenant_id: str, kind: str, config: dict[str, Any], box: SecretBox,
                   name: str | None = None, events: list[str] | None = None, workflow_code: str | None = None,
                   allowlist: Allowlist | str | None = None) -> dict[str, Any]:
    """Create a channel; the returned dict shows the webhook secret (the only time it is shown)."""
    clean = seal_secrets(validate_config(kind, config, allowlist=allowlist), box)
    row_id = repo.insert_channel(conn, {
        "tenant_id": tenant_id, "kind": kind, "name": name or kind, "config": clean,
        "events": _validate_events(events), "workflow_code": workflow_code, "enabled": True,
        "created_at": utcnow()})
    return public_view(get_channel(conn, tenant_id, row_id), reveal=box)


def get_channel(conn: Connection, tenant_id: str | None, channel_id: int) -> dict[str, Any]:
    """A channel row as a dict (any tenant when ``tenant_id`` is None); NotFound otherwise."""
    row = repo.channel_by_id(conn, channel_id, tenant_id=tenant_id)
    if row is None:
        raise NotFound(f"channel {channel_id} not found")
    return row


def list_channels(conn: Connection, tenant_id: str | None) -> list[dict[str, Any]]:
    """Every channel of a tenant (all tenants when None), secrets masked."""
    return [public_view(r) for r in repo.channel_rows(conn, tenant_id=tenant_id)]


def update_channel(conn: Connection, tenant_id: str, channel_id: int, *, box: SecretBox,
                   allowlist: Allowlist | str | None = None, **changes: Any) -> dict[str, Any]:
    """Change name, config, events, workflow_code or enabled (re-enabling clears the disabled reason)."""
    current = get_channel(conn, tenant_id, channel_id)
    values: dict[str, Any] = {}
    if changes.get("config") is not None:
        config = dict(changes["config"])
        if current["kind"] == "webhook" and "secrets" not in config:  # keep secrets across edits
            config["secrets"] = _opened(current["config"].get("secrets", []), box)
        values["config"] = seal_secrets(validate_config(current["kind"], config, allowlist=allowlist), box)
    if "events" in changes:
        values["events"] = _validate_events(changes["events"])
    for key in ("name", "workflow_code"):
        if key in changes:
            values[key] = changes[key]
    if changes.get("enabled") is not None:
        values["enabled"] = bool(changes["enabled"])
        if values["enabled"]:
            values["disabled_reason"] = None
    if values:
        repo.update_channel_row(conn, channel_id, values)
    return public_view(get_channel(conn, tenant_id, channel_id))


def delete_channel(conn: Connection, tenant_id: str, channel_id: int) -> None:
    """Delete a channel; its pending deliveries are cancelled (the log keeps them)."""
    get_channel(conn, tenant_id, channel_id)
    cancel_pending(conn, channel_id, "channel deleted")
    repo.delete_channel_row(conn, channel_id)


def disable_channel(conn: Connection, channel_id: int, reason: str) -> None:
    """Turn a channel off (e.g. its endpoint answered 410 Gone) and cancel what it still had pending."""
    repo.update_channel_row(conn, channel_id, {"enabled": False, "disabled_reason": reason})
    cancel_pending(conn, channel_id, reason)


def cancel_pending(conn: Connection, channel_id: int, reason: str) -> int:
    """Cancel the channel's pending deliveries (the log keeps them); how many."""
    return repo.cancel_pending_deliveries(conn, channel_id, reason)


def rotate_secret(conn: Connection, tenant_id: str, channel_id: int, *, box: SecretBox,
                  overlap_seconds: int = 86400) -> dict[str, Any]:
    """Add a new signing secret; the current ones stay valid for ``overlap_seconds`` (two signatures)."""
    channel = get_channel(conn, tenant_id, channel_id)
    if channel["kind"] != "webhook":
        raise InvalidInput("only webhook channels have signing secrets")
    now = utcnow()
    expires = iso(now + timedelta(seconds=overlap_seconds))
    kept = [dict(s, expires_at=s.get("expires_at") or expires) for s in active_secrets(channel["config"], now)]
    config = dict(channel["config"])
    config["secrets"] = [{"secret": new_secret(), "created_at": iso(now)}, *kept]
    repo.update_channel_row(conn, channel_id, {"config": seal_secrets(config, box)})
    return public_view(get_channel(conn, tenant_id, channel_id), reveal=box)


def active_secrets(config: dict[str, Any], now: datetime | None = None) -> list[dict[str, Any]]:
    """The webhook secrets not yet expired, newest first (as stored: sealed)."""
    moment = iso(now or utcnow()) or ""
    return [s for s in config.get("secrets", []) if not s.get("expires_at") or s["expires_at"] > moment]


def signing_secrets(config: dict[str, Any], box: SecretBox) -> list[str]:
    """The plaintext ``whsec_`` secrets that sign a delivery now (newest first)."""
    return [box.open(s["secret"]) for s in active_secrets(config)]


def seal_secrets(config: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """``config`` with every webhook secret encrypted and a short hint kept beside it."""
    if "secrets" not in config:
        return config
    sealed = [s if SecretBox.is_sealed(s["secret"]) else {**s, "secret": box.seal(s["secret"]), "hint": _hint(s)}
              for s in config["secrets"]]
    return {**config, "secrets": sealed}


def seal_plaintext_secrets(engine: Engine, box: SecretBox) -> int:
    """Encrypt the webhook secrets stored in plain text before encryption at rest existed; returns the
    number of channels changed (run on every migrate: a no-op once done)."""
    changed = 0
    with engine.begin() as conn:
        for channel_id, stored in repo.webhook_configs(conn):
            config = stored or {}
            if any(not SecretBox.is_sealed(s["secret"]) for s in config.get("secrets", [])):
                repo.update_channel_row(conn, channel_id, {"config": seal_secrets(config, box)})
                changed += 1
    return changed


def _hint(secret: dict[str, Any]) -> str:
    return str(secret["secret"])[:10]


def _masked(secrets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k != "hint"} | {"secret": (s.get("hint") or _hint(s)) + "…"}
            for s in secrets]


def _opened(secrets: list[dict[str, Any]], box: SecretBox) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k != "hint"} | {"secret": box.open(s["secret"])} for s in secrets]


def matching_channels(conn: Connection, *, tenant_id: str, event_type: str,
                      workflow_code: str | None) -> list[dict[str, Any]]:
    """Enabled channels of the tenant whose workflow and event filters accept this event."""
    rows = repo.enabled_channels(conn, tenant_id=tenant_id, workflow_code=workflow_code)
    return [r for r in rows if event_matches(r["events"], event_type)]


def public_view(channel: dict[str, Any], *, reveal: SecretBox | None = None) -> dict[str, Any]:
    """A channel for the API / CLI: secrets masked, unless a box to ``reveal`` them is given."""
    config = dict(channel["config"] or {})
    if "secrets" in config:
        config["secrets"] = _opened(config["secrets"], reveal) if reveal is not None else _masked(config["secrets"])
    return {"id": channel["id"], "tenant_id": channel["tenant_id"], "kind": channel["kind"],
            "name": channel["name"], "workflow_code": channel["workflow_code"], "events": channel["events"],
            "enabled": bool(channel["enabled"]), "disabled_reason": channel["disabled_reason"],
            "config": config, "created_at": iso(channel["created_at"])}
