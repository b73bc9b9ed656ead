"""Signed webhook deliveries to a real receiver on loopback: signatures, retries, 410, rotation, SSRF."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from standardwebhooks import Webhook, WebhookVerificationError

from mediamill.config import Settings
from mediamill.errors import InvalidInput
from mediamill.installkey import SecretBox
from mediamill.notify import channels as ch
from mediamill.notify.delivery import Dispatcher, send_test
from mediamill.store.tables import notification_channels, workflow_notifications

from .support import Receiver, add_job_event, insert_job, insert_workflow, wait_until


@pytest.fixture
def dispatcher(engine: Engine, settings: Settings) -> Iterator[Dispatcher]:
    d = Dispatcher(engine=engine, settings=settings, worker_id="test-dispatcher")
    yield d
    d.close()


def _webhook_channel(engine: Engine, settings: Settings, url: str, **kw: object) -> dict:
    with engine.begin() as conn:
        return ch.create_channel(conn, box=SecretBox.for_settings(settings),
                         tenant_id="default", kind="webhook", config={"url": url},
                                 allowlist=settings.url_allowlist, **kw)


def _deliveries(engine: Engine) -> list[dict]:
    wn = workflow_notifications
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(wn).where(wn.c.channel.is_not(None)).order_by(wn.c.id))
                .mappings()]


def _drive(dispatcher: Dispatcher, until, timeout: float = 10.0, message: str = "delivery") -> None:
    wait_until(lambda: dispatcher.run_once() >= 0 and until(), timeout=timeout, message=message)


def test_delivery_is_signed_and_verifiable(engine: Engine, settings: Settings, dispatcher: Dispatcher,
                                           receiver: Receiver) -> None:
    channel = _webhook_channel(engine, settings, receiver.url)
    secret = channel["config"]["secrets"][0]["secret"]
    job = insert_job(engine, workflow_id=insert_workflow(engine))
    event_id = add_job_event(engine, job)

    _drive(dispatcher, lambda: receiver.count() == 1)

    got = receiver.requests[0]
    payload = Webhook(secret).verify(got.body, got.headers)
    assert payload["id"] == event_id == got.headers["webhook-id"]
    assert payload["type"] == "job.completed" and payload["data"]["job_id"] == job
    with pytest.raises(WebhookVerificationError):
        Webhook(ch.new_secret()).verify(got.body, got.headers)
    _drive(dispatcher, lambda: _deliveries(engine)[0]["status"] == "sent")
    row = _deliveries(engine)[0]
    assert row["attempts"] == 1 and row["sent_at"] is not None and row["event_id"] == event_id
    assert [e["status_code"] for e in row["attempt_log"]] == [200]


def test_retries_after_500s_deliver_exactly_once_more_with_same_id(
        engine: Engine, settings: Settings, dispatcher: Dispatcher, receiver: Receiver) -> None:
    receiver.statuses = [500, 500, 500]
    _webhook_channel(engine, settings, receiver.url)
    add_job_event(engine, insert_job(engine, workflow_id=insert_workflow(engine)))

    _drive(dispatcher, lambda: _deliveries(engine)[0]["status"] == "sent", message="sent after 3 failures")
    for _ in range(5):  # further rounds send nothing more
        dispatcher.run_once()

    assert receiver.count() == 4
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    row = _deliveries(engine)[0]
    assert row["attempts"] == 4
    assert [e["status_code"] for e in row["attempt_log"]] == [500, 500, 500, 200]
    assert row["error_message"] is None


def test_410_disables_the_channel(engine: Engine, settings: Settings, dispatcher: Dispatcher,
                                  receiver: Receiver) -> None:
    receiver.statuses = [410]
    channel = _webhook_channel(engine, settings, receiver.url)
    wf = insert_workflow(engine)
    add_job_event(engine, insert_job(engine, workflow_id=wf))

    _drive(dispatcher, lambda: _deliveries(engine)[0]["status"] == "failed")
    with engine.connect() as conn:
        row = conn.execute(sa.select(notification_channels).where(
            notification_channels.c.id == channel["id"])).mappings().one()
    assert row["enabled"] is False or row["enabled"] == 0
    assert "410" in row["disabled_reason"]

    add_job_event(engine, insert_job(engine, workflow_id=wf))
    dispatcher.run_once()
    assert len(_deliveries(engine)) == 1 and receiver.count() == 1


def test_rotation_signs_with_both_secrets(engine: Engine, settings: Settings, dispatcher: Dispatcher,
                                          receiver: Receiver) -> None:
    channel = _webhook_channel(engine, settings, receiver.url)
    old = channel["config"]["secrets"][0]["secret"]
    with engine.begin() as conn:
        rotated = ch.rotate_secret(conn, "default", channel["id"], box=SecretBox.for_settings(settings))
    new = rotated["config"]["secrets"][0]["secret"]
    assert new != old and len(rotated["config"]["secrets"]) == 2
    add_job_event(engine, insert_job(engine, workflow_id=insert_workflow(engine)))

    _drive(dispatcher, lambda: receiver.count() == 1)
    got = receiver.requests[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(got.body, got.headers)
    Webhook(new).verify(got.body, got.headers)


def test_filters_by_workflow_and_event(engine: Engine, settings: Settings, dispatcher: Dispatcher,
                                       receiver: Receiver) -> None:
    _webhook_channel(engine, settings, receiver.url, workflow_code="WF-IMAGE-PROCESS", events=["job.failed"])
    video = insert_workflow(engine)
    image = insert_workflow(engine, "WF-IMAGE-PROCESS", "image")
    add_job_event(engine, insert_job(engine, workflow_id=video), event_type="job.failed")
    add_job_event(engine, insert_job(engine, workflow_id=image), event_type="job.completed",
                  workflow_code="WF-IMAGE-PROCESS")
    add_job_event(engine, insert_job(engine, workflow_id=image), event_type="job.failed",
                  workflow_code="WF-IMAGE-PROCESS")
    add_job_event(engine, insert_job(engine, workflow_id=image, tenant_id="other"), event_type="job.failed",
                  workflow_code="WF-IMAGE-PROCESS", tenant_id="other")

    _drive(dispatcher, lambda: receiver.count() == 1)
    for _ in range(3):
        dispatcher.run_once()
    assert receiver.count() == 1
    body = receiver.requests[0].json()
    assert body["type"] == "job.failed" and body["data"]["workflow_code"] == "WF-IMAGE-PROCESS"


def test_per_job_notify_webhook_and_ssrf_guard(engine: Engine, settings: Settings, dispatcher: Dispatcher,
                                               receiver: Receiver) -> None:
    from mediamill.notify.senders import job_webhook_secret

    wf = insert_workflow(engine)
    add_job_event(engine, insert_job(engine, workflow_id=wf), notify={"webhook": receiver.url})
    add_job_event(engine, insert_job(engine, workflow_id=wf), notify={"webhook": "http://10.0.0.7/hook"})

    _drive(dispatcher, lambda: {r["status"] for r in _deliveries(engine)} == {"sent", "failed"})
    got = receiver.requests[0]
    Webhook(job_webhook_secret(settings, "default")).verify(got.body, got.headers)
    refused = next(r for r in _deliveries(engine) if r["status"] == "failed")
    assert "non-public" in refused["error_message"] and refused["attempts"] == 1

    with engine.begin() as conn, pytest.raises(InvalidInput, match="non-public"):
        ch.create_channel(conn, box=SecretBox.for_settings(settings),
                         tenant_id="default", kind="webhook", config={"url": "http://169.254.169.254/x"},
                          allowlist=settings.url_allowlist)


def test_replay_and_test_send(engine: Engine, settings: Settings, dispatcher: Dispatcher,
                              receiver: Receiver) -> None:
    from mediamill.notify import dispatcher as dp

    channel = _webhook_channel(engine, settings, receiver.url)
    add_job_event(engine, insert_job(engine, workflow_id=insert_workflow(engine)))
    _drive(dispatcher, lambda: receiver.count() == 1)
    first = _deliveries(engine)[0]

    with engine.begin() as conn:
        replayed = dp.replay(conn, first["id"], tenant_id="default")
    _drive(dispatcher, lambda: receiver.count() == 2)
    assert replayed["id"] != first["id"]
    assert receiver.requests[1].headers["webhook-id"] == receiver.requests[0].headers["webhook-id"]

    result = send_test(engine, settings, tenant_id="default", channel_id=channel["id"])
    assert result["ok"] and result["status"] == "sent"
    assert receiver.requests[2].json()["type"] == "test"


def test_job_webhook_secret_is_not_derived_from_a_constant(engine: Engine, settings: Settings,
                                                           dispatcher: Dispatcher, receiver: Receiver,
                                                           tmp_path) -> None:
    """Without MEDIAMILL_SECRET_KEY the per-tenant secret comes from the install's random key: knowing the
    tenant id is not enough to sign, and another install signs differently."""
    import base64
    import hashlib
    import hmac

    from mediamill.config import load_settings
    from mediamill.notify.senders import job_webhook_secret

    assert not settings.secret_key
    add_job_event(engine, insert_job(engine, workflow_id=insert_workflow(engine)), notify={"webhook": receiver.url})
    _drive(dispatcher, lambda: receiver.count() == 1)
    got = receiver.requests[0]
    Webhook(job_webhook_secret(settings, "default")).verify(got.body, got.headers)

    old = hmac.new(b"mediamill-insecure-default-key", b"job-webhooks:default", hashlib.sha256).digest()
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(old).decode()).verify(got.body, got.headers)
    other_install = load_settings(data_dir=tmp_path / "elsewhere", database_url=settings.database_url)
    with pytest.raises(WebhookVerificationError):
        Webhook(job_webhook_secret(other_install, "default")).verify(got.body, got.headers)


def _stored_secrets(engine: Engine, channel_id: int) -> list[dict]:
    with engine.connect() as conn:
        config = conn.execute(sa.select(notification_channels.c.config)
                              .where(notification_channels.c.id == channel_id)).scalar_one()
    return config["secrets"]


def test_channel_secrets_are_encrypted_at_rest(engine: Engine, settings: Settings, dispatcher: Dispatcher,
                                               receiver: Receiver, tmp_path) -> None:
    from mediamill.config import load_settings
    from mediamill.errors import ConfigError

    channel = _webhook_channel(engine, settings, receiver.url)
    secret = channel["config"]["secrets"][0]["secret"]
    stored = _stored_secrets(engine, channel["id"])
    assert stored[0]["secret"].startswith("enc:v1:") and secret not in str(stored)
    assert stored[0]["hint"] == secret[:10]
    with engine.connect() as conn:
        masked = ch.list_channels(conn, "default")[0]["config"]["secrets"][0]
    assert masked["secret"] == secret[:10] + "…" and "hint" not in masked

    add_job_event(engine, insert_job(engine, workflow_id=insert_workflow(engine)))
    _drive(dispatcher, lambda: receiver.count() == 1)
    got = receiver.requests[0]
    Webhook(secret).verify(got.body, got.headers)  # still an HMAC secret once opened

    with engine.begin() as conn:
        rotated = ch.rotate_secret(conn, "default", channel["id"], box=SecretBox.for_settings(settings))
    assert [s["secret"] for s in rotated["config"]["secrets"]][1] == secret
    assert all(s["secret"].startswith("enc:v1:") for s in _stored_secrets(engine, channel["id"]))
    elsewhere = SecretBox.for_settings(load_settings(data_dir=tmp_path / "other-install"))
    with pytest.raises(ConfigError, match="another install key"):
        ch.signing_secrets({"secrets": stored}, elsewhere)


def test_plaintext_secrets_of_an_older_version_are_encrypted_by_migrate(engine: Engine, settings: Settings,
                                                                         dispatcher: Dispatcher,
                                                                         receiver: Receiver) -> None:
    from mediamill.runtime import Runtime

    secret = ch.new_secret()
    with engine.begin() as conn:  # a row as the previous version wrote it
        channel_id = conn.execute(notification_channels.insert().values(
            tenant_id="default", kind="webhook", name="old", enabled=True,
            config={"url": receiver.url, "secrets": [{"secret": secret, "created_at": "2026-01-01T00:00:00Z"}]},
        ).returning(notification_channels.c.id)).scalar_one()
    add_job_event(engine, insert_job(engine, workflow_id=insert_workflow(engine)))
    _drive(dispatcher, lambda: receiver.count() == 1)  # a plaintext row keeps working until migrated
    Webhook(secret).verify(receiver.requests[0].body, receiver.requests[0].headers)

    rt = Runtime(settings=settings)
    rt.migrate()
    rt.migrate()  # a no-op the second time
    rt.close()
    stored = _stored_secrets(engine, channel_id)
    assert stored[0]["secret"].startswith("enc:v1:") and stored[0]["hint"] == secret[:10]
    assert ch.signing_secrets({"secrets": stored}, SecretBox.for_settings(settings)) == [secret]
    add_job_event(engine, insert_job(engine, workflow_id=insert_workflow(engine)))
    _drive(dispatcher, lambda: receiver.count() == 2)
    Webhook(secret).verify(receiver.requests[1].body, receiver.requests[1].headers)
