"""Email through a real SMTP server on loopback (aiosmtpd) and Slack Block Kit to a loopback receiver."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine

from mediamill.installkey import SecretBox
from mediamill.notify import channels as ch
from mediamill.notify.delivery import Dispatcher

from .support import Receiver, add_job_event, insert_job, insert_workflow, make_settings, wait_until


class Inbox:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, _server: object, _session: object, envelope: object) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parts(msg: Message) -> dict[str, str]:
    return {p.get_content_type(): p.get_payload(decode=True).decode() for p in msg.walk()
            if p.get_content_type() in ("text/plain", "text/html")}


def test_completion_and_failure_emails(engine: Engine, db_url: str, tmp_path: Path,
                                       smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    settings = make_settings(tmp_path, db_url, smtp_host="127.0.0.1", smtp_port=port)
    with engine.begin() as conn:
        ch.create_channel(conn, box=SecretBox.for_settings(settings),
                         tenant_id="default", kind="email", config={"to": ["ops@example.com"]},
                          events=["job.completed", "job.failed"])
    video = insert_workflow(engine)
    image = insert_workflow(engine, "WF-IMAGE-PROCESS", "image")
    add_job_event(engine, insert_job(engine, workflow_id=video, filename="video1.mp4"))
    add_job_event(engine, insert_job(engine, workflow_id=image, filename="image1.jpg", status="failed"),
                  event_type="job.failed", workflow_code="WF-IMAGE-PROCESS", error_class="invalid_input",
                  error_message="corrupt file header", notify={"email": "user_002@company.com"})

    dispatcher = Dispatcher(engine=engine, settings=settings)
    try:
        wait_until(lambda: dispatcher.run_once() >= 0 and len(inbox.messages) == 3, message="three emails")
    finally:
        dispatcher.close()

    by_subject = sorted(inbox.messages, key=lambda m: (m["Subject"], m["To"]))
    done, failed_ops, failed_user = (by_subject[2], by_subject[0], by_subject[1])
    assert done["Subject"] == "Video Processing Complete" and done["To"] == "ops@example.com"
    body = _parts(done)
    assert "Your video video1.mp4 has been processed successfully." in body["text/plain"]
    assert "<table>" in body["text/html"] and "Video Processing Complete" in body["text/html"]
    assert failed_ops["Subject"] == failed_user["Subject"] == "Processing Failed"
    assert failed_user["To"] == "user_002@company.com"
    assert "Image processing failed: corrupt file header" in _parts(failed_user)["text/plain"]
    assert failed_user["X-Mediamill-Event-Id"].startswith("evt_")


def test_smtp_down_is_retried_not_lost(engine: Engine, db_url: str, tmp_path: Path, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    down = make_settings(tmp_path, db_url, smtp_host="127.0.0.1", smtp_port=1, notify_timeout_seconds=2)
    add_job_event(engine, insert_job(engine, workflow_id=insert_workflow(engine)), notify={"email": "a@b.example"})
    dispatcher = Dispatcher(engine=engine, settings=down)
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()
    assert inbox.messages == []

    up = make_settings(tmp_path, db_url, smtp_host="127.0.0.1", smtp_port=port)
    dispatcher = Dispatcher(engine=engine, settings=up)
    try:
        wait_until(lambda: dispatcher.run_once() >= 0 and len(inbox.messages) == 1, message="email after retry")
    finally:
        dispatcher.close()


def test_slack_block_kit(engine: Engine, db_url: str, tmp_path: Path, receiver: Receiver) -> None:
    settings = make_settings(tmp_path, db_url)
    with engine.begin() as conn:
        ch.create_channel(conn, box=SecretBox.for_settings(settings),
                         tenant_id="default", kind="slack", config={"url": receiver.url},
                          allowlist=settings.url_allowlist)
    job = insert_job(engine, workflow_id=insert_workflow(engine, "WF-IMAGE-PROCESS", "image"), status="failed")
    add_job_event(engine, job, event_type="job.failed", workflow_code="WF-IMAGE-PROCESS",
                  error_class="transient", error_message="storage timeout")
    dispatcher = Dispatcher(engine=engine, settings=settings)
    try:
        wait_until(lambda: dispatcher.run_once() >= 0 and receiver.count() == 1, message="slack message")
    finally:
        dispatcher.close()

    message = receiver.requests[0].json()
    assert "Processing Failed" in message["text"]
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds[0] == "header" and "section" in kinds and "actions" in kinds
    fields = next(b["fields"] for b in message["blocks"] if "fields" in b)
    texts = " ".join(f["text"] for f in fields)
    for label in ("*Job*", "*Workflow*\nWF-IMAGE-PROCESS v1", "*Status*\nfailed", "*Duration*\n1m 23s"):
        assert label in texts
    button = next(b for b in message["blocks"] if b["type"] == "actions")["elements"][0]
    assert button["url"] == f"http://mm.test/jobs/JOB-{job}"
