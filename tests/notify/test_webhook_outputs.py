"""A finished job's webhook lists its outputs with a download URL that works: a real worker, the
notifier, a receiver and the API on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
from standardwebhooks import Webhook

from mediamill.engine.submit import SubmitRequest, store_input_file, submit_job
from mediamill.engine.worker import Worker
from mediamill.notify import channels as ch
from mediamill.notify.dispatcher import api_base
from mediamill.notify.runner import Notifier
from mediamill.runtime import Runtime
from mediamill.store import auth_repo, workflow_repo
from mediamill.workflows.loader import validate_document
from tests.helpers import LiveServer

from .support import Receiver, make_settings, wait_until

MANIFEST = {"code": "WF-OUTPUTS", "name": "outputs", "type": "generic", "queue": "out", "input_types": ["*/*"],
            "steps": [{"name": "Finalize", "action": "finalize_job"}]}


def test_webhook_outputs_carry_a_download_url(tmp_path: Path, db_url: str, receiver: Receiver) -> None:
    rt = Runtime(settings=make_settings(tmp_path, db_url, public_url=""))
    rt.migrate()
    with rt.engine.begin() as conn:
        workflow_repo.save_version(conn, validate_document(MANIFEST), author="tests")
        channel = ch.create_channel(conn, tenant_id="default", kind="webhook", config={"url": receiver.url},
                                    allowlist=rt.settings.url_allowlist, box=rt.secret_box)
    key = auth_repo.create_key(rt.engine, role="viewer").plaintext
    source = tmp_path / "input.txt"
    source.write_text("hello\n")
    with LiveServer(rt) as live:
        rt.settings.public_url = live.url + "/"  # where receivers reach this API
        worker = Worker(rt, pools={"out": 1}).start()
        notifier = Notifier(engine=rt.engine, settings=rt.settings).start()
        try:
            job = submit_job(rt.engine, SubmitRequest(job_input=store_input_file(rt.storage, source),
                                                      workflow_code="WF-OUTPUTS"))
            wait_until(lambda: any(r.json()["type"] == "job.completed" for r in receiver.requests), timeout=60,
                       message="the job.completed webhook")
        finally:
            notifier.stop()
            worker.stop(grace=5)
        request = next(r for r in receiver.requests if r.json()["type"] == "job.completed")
        body = Webhook(channel["config"]["secrets"][0]["secret"]).verify(request.body, request.headers)
        (output,) = body["data"]["outputs"]
        assert output["url"] == f"{live.url}/v1/jobs/{job.id}/outputs/manifest.json"
        got = httpx.get(output["url"], headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert got.status_code == 200 and got.json()["job"]["job_code"] == job.job_code
    rt.close()


def test_without_a_public_url_outputs_point_at_the_served_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "", public_url="", host="0.0.0.0", port=8123)
    assert api_base(settings) == "http://127.0.0.1:8123"
    assert api_base(make_settings(tmp_path, "", public_url="https://media.example.com/")) == \
        "https://media.example.com"
