"""`mediamill notifier | channels … | notifications … | alerts`."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import typer

from mediamill.cli import observe, remote
from mediamill.cli.context import open_runtime
from mediamill.cli.output import console, handle_errors, print_json, print_table
from mediamill.errors import InvalidInput
from mediamill.runtime import Runtime

JSON = typer.Option(False, "--json", help="print JSON")
TENANT = typer.Option("default", "--tenant", help="tenant id")

channels_app = typer.Typer(help="Notification channels (webhook, email, Slack).", no_args_is_help=True)
notifications_app = typer.Typer(help="The notification delivery log.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add these commands to the root `mediamill` app."""
    app.add_typer(channels_app, name="channels")
    app.add_typer(notifications_app, name="notifications")
    app.command("notifier")(notifier)
    app.command("alerts")(alerts)


# --------------------------------------------------------------------------- notifier
@handle_errors
def notifier(no_alerts: bool = typer.Option(False, "--no-alerts", help="deliver only; do not evaluate alerts"),
             once: bool = typer.Option(False, "--once", help="run one delivery + alert round and exit"),
             metrics_port: int | None = observe.metrics_port_option()) -> None:
    """Run the notification dispatcher and the alert evaluator (several may run at once)."""
    from mediamill.notify.alerting import Alerter
    from mediamill.notify.delivery import Dispatcher
    from mediamill.notify.runner import Notifier
    from mediamill.observability.logging import configure

    rt = Runtime()
    rt.check_install_key()  # it signs with the install key: a replica without the shared key must not start
    rt.refuse_newer_schema()
    port = 0 if once else observe.resolve_port(rt, metrics_port)
    observe.isolate_metrics(rt, "notifier", port)
    configure(rt.settings, "notifier")
    if once:
        dispatcher = Dispatcher(engine=rt.engine, settings=rt.settings)
        try:
            sent = dispatcher.run_once()
        finally:
            dispatcher.close()
        changes = [] if no_alerts else Alerter(engine=rt.engine, settings=rt.settings).evaluate_once()
        console.print(f"{sent} deliveries attempted, {len(changes)} alert changes")
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner = Notifier(engine=rt.engine, settings=rt.settings, alerts=not no_alerts).start()
    endpoint = observe.start_endpoint(rt, "notifier", port)
    if endpoint:
        console.print(f"notifier metrics on {endpoint.url}/metrics", highlight=False)
    try:
        stop.wait()
    finally:
        if endpoint:
            endpoint.stop()
        runner.stop()
        rt.close()


# --------------------------------------------------------------------------- channels
@channels_app.command("list")
@handle_errors
def channels_list(tenant: str | None = typer.Option(None, "--tenant", help="only this tenant"),
                  json_: bool = JSON) -> None:
    """List channels (secrets masked)."""
    from mediamill.notify.channels import list_channels

    mm = remote.client()
    if mm is not None:  # the API key's tenant
        rows = [r for r in mm.channels() if tenant is None or r.get("tenant_id") == tenant]
    else:
        with open_runtime().engine.connect() as conn:
            rows = list_channels(conn, tenant)
    if json_:
        print_json(rows)
        return
    for r in rows:
        r["target"] = r["config"].get("url") or ", ".join(r["config"].get("to", []))
        r["events"] = ",".join(r["events"] or ["*"])
    print_table(rows, ["id", "tenant_id", "kind", "name", "workflow_code", "events", "target", "enabled",
                       "disabled_reason"])


def _config_from_options(kind: str, url: str | None, to: list[str] | None, config_json: str | None) -> dict[str, Any]:
    if config_json:
        try:
            return dict(json.loads(config_json))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"--config must be a JSON object: {exc}") from None
    if kind == "email":
        return {"to": to or []}
    if not url:
        raise InvalidInput(f"a {kind} channel needs --url")
    return {"url": url}


@channels_app.command("create")
@handle_errors
def channels_create(kind: str = typer.Argument(..., help="webhook | email | slack"),
                    url: str | None = typer.Option(None, help="endpoint (webhook, slack)"),
                    to: list[str] | None = typer.Option(None, "--to", help="email recipient (repeatable)"),
                    name: str | None = typer.Option(None),
                    event: list[str] | None = typer.Option(None, "--event", help="event filter (repeatable)"),
                    workflow: str | None = typer.Option(None, help="only jobs of this workflow code"),
                    config: str | None = typer.Option(None, "--config", help="full config as JSON"),
                    tenant: str = TENANT, json_: bool = JSON) -> None:
    """Create a channel; prints the webhook signing secret once."""
    from mediamill.notify.channels import create_channel

    mm = remote.client()
    if mm is not None:  # the channel belongs to the API key's tenant
        created = mm.create_channel(kind, _config_from_options(kind, url, to, config), name=name,
                                    events=event or None, workflow_code=workflow)
    else:
        rt = open_runtime()
        with rt.engine.begin() as conn:
            created = create_channel(conn, tenant_id=tenant, kind=kind, name=name, events=event or None,
                                     workflow_code=workflow, config=_config_from_options(kind, url, to, config),
                                     allowlist=rt.settings.url_allowlist, box=rt.secret_box)
    if json_:
        print_json(created)
        return
    console.print(f"created {kind} channel {created['id']}")
    for s in created["config"].get("secrets", []):
        console.print(f"signing secret: {s['secret']}", highlight=False)


@channels_app.command("test")
@handle_errors
def channels_test(channel_id: int, json_: bool = JSON) -> None:
    """Send a test notification to a channel now."""
    from mediamill.notify.delivery import send_test

    mm = remote.client()
    if mm is not None:
        result = mm.test_channel(channel_id)
    else:
        rt = open_runtime()
        result = send_test(rt.engine, rt.settings, tenant_id=None, channel_id=channel_id)
    if json_:
        print_json(result)
    elif result["ok"]:
        console.print(f"delivered (status {result['status_code']}, {result['duration_ms']} ms)")
    else:
        console.print(f"[red]failed:[/red] {result['error']}", highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


@channels_app.command("delete")
@handle_errors
def channels_delete(channel_id: int, tenant: str = TENANT) -> None:
    """Delete a channel (its pending deliveries are cancelled)."""
    from mediamill.notify.channels import delete_channel

    mm = remote.client()
    if mm is not None:
        mm.delete_channel(channel_id)
    else:
        with open_runtime().engine.begin() as conn:
            delete_channel(conn, tenant, channel_id)
    console.print(f"deleted channel {channel_id}")


@channels_app.command("rotate-secret")
@handle_errors
def channels_rotate(channel_id: int, overlap: int = typer.Option(86400, help="seconds the old secret stays valid"),
                    tenant: str = TENANT) -> None:
    """Add a new webhook signing secret; the old one keeps signing during the overlap."""
    from mediamill.notify.channels import rotate_secret

    mm = remote.client()
    if mm is not None:
        rotated = mm.rotate_channel_secret(channel_id, overlap_seconds=overlap)
    else:
        rt = open_runtime()
        with rt.engine.begin() as conn:
            rotated = rotate_secret(conn, tenant, channel_id, overlap_seconds=overlap, box=rt.secret_box)
    console.print(f"new signing secret: {rotated['config']['secrets'][0]['secret']}", highlight=False)


# --------------------------------------------------------------------------- notifications
@notifications_app.command("list")
@handle_errors
def notifications_list(status: str | None = typer.Option(None, help="pending | sent | failed | cancelled"),
                       event: str | None = typer.Option(None, "--event", help="event type"),
                       job: int | None = typer.Option(None, "--job", help="job id"),
                       events: bool = typer.Option(False, "--events", help="include outbox event rows"),
                       limit: int = typer.Option(50), json_: bool = JSON) -> None:
    """The delivery log, newest first."""
    from mediamill.notify.history import list_notifications

    mm = remote.client()
    if mm is not None:
        rows = mm.notifications(status=status, event_type=event, job_id=job, include_events=events, limit=limit)
    else:
        with open_runtime().engine.connect() as conn:
            rows = list_notifications(conn, tenant_id=None, status=status, event_type=event, job_id=job,
                                      include_events=events, limit=limit)
    if json_:
        print_json(rows)
    else:
        print_table(rows, ["id", "event_type", "channel", "recipient", "status", "attempts", "error_message",
                           "created_at", "sent_at"])


@notifications_app.command("replay")
@handle_errors
def notifications_replay(notification_id: int, json_: bool = JSON) -> None:
    """Send a delivery again (same event id); replaying an outbox event re-expands it."""
    from mediamill.notify.dispatcher import replay

    mm = remote.client()
    if mm is not None:
        result = mm.replay_notification(notification_id)
    else:
        with open_runtime().engine.begin() as conn:
            result = replay(conn, notification_id, tenant_id=None)
    if json_:
        print_json(result)
    else:
        console.print(f"queued replay of {notification_id} as {result['mode']} row {result['id']}")


# --------------------------------------------------------------------------- alerts
@handle_errors
def alerts(state: str | None = typer.Option(None, help="pending | firing | resolved | active"),
           limit: int = typer.Option(50), json_: bool = JSON) -> None:
    """Alerts, newest first (run `mediamill notifier` to evaluate the rules)."""
    from mediamill.notify.alerting import list_alerts

    mm = remote.client()
    if mm is not None:
        rows = mm.alerts(state=state, limit=limit)
    else:
        with open_runtime().engine.connect() as conn:
            rows = list_alerts(conn, state=state, limit=limit)
    if json_:
        print_json(rows)
        return
    for r in rows:
        r["labels"] = ",".join(f"{k}={v}" for k, v in r["labels"].items())
    print_table(rows, ["id", "rule", "severity", "state", "labels", "value", "summary", "fired_at", "resolved_at"])
