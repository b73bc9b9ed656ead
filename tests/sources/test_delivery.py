"""Destinations: a workflow's deliver: puts every output at its templated key on moto's S3 (server-side from S3
storage, uploaded from local storage), lists the URLs on the job, retries a failed delivery (visible on the job
page), and per-job overrides only go where the tenant allows."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from mediamill.api.app import create_app
from mediamill.engine import operations as ops
from mediamill.engine.delivery import allowed, output_fields, resolve_target
from mediamill.engine.worker import Worker
from mediamill.errors import InvalidInput
from mediamill.runtime import Runtime
from mediamill.storage.s3 import S3Storage
from mediamill.store import auth_repo
from mediamill.store.tables import workflow_notifications
from mediamill.workflows.models import DeliverDef
from tests.helpers import LiveServer, apply_workflow, make_runtime, wait_until

from .conftest import FAST

OUTPUTS = {"thumbnail_64.jpg", "image.webp", "manifest.json"}


def _workflow(code: str, deliver: Any, retries: int = 30) -> dict[str, Any]:
    spec = {"to": deliver, "retry_count": retries} if isinstance(deliver, str) else deliver
    return {"code": code, "name": "Deliver renditions", "type": "image", "input_types": ["image/jpeg"],
            "queue": "deliver", "steps": [
                {"name": "Thumbnail", "action": "create_thumbnail", "params": {"size": 64}},
                {"name": "WebP", "action": "convert_format", "params": {"format": "webp"}},
                {"name": "Manifest", "action": "finalize_job"}],
            "deliver": spec}


@pytest.fixture(params=["s3-storage", "local-storage"])
def drt(request: pytest.FixtureRequest, s3_env: str, tmp_path: Path) -> Iterator[Runtime]:
    storage = "s3://store/mm" if request.param == "s3-storage" else ""
    runtime = make_runtime(tmp_path / "data", "", storage_url=storage, **FAST)
    if isinstance(runtime.storage, S3Storage):
        runtime.storage.ensure_bucket()
    yield runtime
    runtime.close()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "holiday photo.jpg"
    Image.new("RGB", (320, 240), (200, 120, 40)).save(path, "JPEG", quality=90)
    return path


@contextlib.contextmanager
def _worker(rt: Runtime) -> Iterator[Worker]:
    worker = Worker(rt, pools={"deliver": 1}).start()
    try:
        yield worker
    finally:
        worker.stop()


def _submit(server: LiveServer, key: str, path: Path, workflow: str, **fields: str) -> httpx.Response:
    with path.open("rb") as fh:
        return httpx.post(f"{server.url}/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                          files={"file": (path.name, fh, "image/jpeg")}, data={"workflow": workflow, **fields})


def _wait_final(rt: Runtime, job_id: int, timeout: float = 60) -> dict[str, Any]:
    return wait_until(lambda: (j := ops.get_job(rt.engine, job_id))["status"] in ("completed", "failed", "partial")
                      and j, timeout=timeout, message=f"job {job_id} finished")


def test_every_output_lands_at_its_templated_key(drt: Runtime, photo: Path) -> None:
    cdn = f"cdn-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=cdn)
    apply_workflow(drt, _workflow("WF-DELIVER", f"s3://{cdn}/videos/{{input_stem}}/{{output}}"))
    key = auth_repo.create_key(drt.engine, role="submitter").plaintext
    with LiveServer(drt) as server, _worker(drt):
        res = _submit(server, key, photo, "WF-DELIVER")
        assert res.status_code == 202, res.text
        job = _wait_final(drt, res.json()["id"])
        outputs = httpx.get(f"{server.url}/v1/jobs/{job['id']}/outputs",
                            headers={"Authorization": f"Bearer {key}"}).json()["items"]
    assert job["status"] == "completed", job["error_message"]
    delivered = {o["name"]: o["delivered_url"] for o in outputs}
    assert set(delivered) == OUTPUTS
    for name, url in delivered.items():
        assert url == f"s3://{cdn}/videos/holiday_photo/{name}"
        head = s3.head_object(Bucket=cdn, Key=f"videos/holiday_photo/{name}")
        mime = next(o["mime_type"] for o in outputs if o["name"] == name)
        assert head["ContentType"] == mime
        assert head["ContentLength"] == next(o["bytes"] for o in outputs if o["name"] == name)
    listed = s3.list_objects_v2(Bucket=cdn)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"videos/holiday_photo/{n}" for n in OUTPUTS)
    steps = [s["step_name"] for s in job["steps"]]
    assert steps[-1] == "Deliver" and steps.count("Deliver") == 1
    with drt.engine.connect() as conn:  # the job.completed webhook tells where each output went
        payload = conn.execute(sa.select(workflow_notifications.c.payload).where(
            workflow_notifications.c.event_type == "job.completed",
            workflow_notifications.c.job_id == job["id"])).scalar_one()
    assert {o["name"]: o["delivered_url"] for o in payload["data"]["outputs"]} == delivered


def test_overwrite_policies(drt: Runtime, photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "www"
    for policy in ("skip", "fail", "replace"):
        apply_workflow(drt, _workflow(f"WF-OVERWRITE-{policy.upper()}", {
            "to": str(out / policy / "{output}"), "overwrite": policy, "outputs": ["*.webp"], "retry_count": 0}))
        (out / policy).mkdir(parents=True)
        (out / policy / "image.webp").write_bytes(b"already there")
    key = auth_repo.create_key(drt.engine, role="submitter").plaintext
    with LiveServer(drt) as server, _worker(drt):
        jobs = {p: _submit(server, key, photo, f"WF-OVERWRITE-{p.upper()}").json()["id"]
                for p in ("skip", "fail", "replace")}
        done = {p: _wait_final(drt, j) for p, j in jobs.items()}
    assert done["skip"]["status"] == "completed"
    assert (out / "skip" / "image.webp").read_bytes() == b"already there"
    assert done["fail"]["status"] == "failed" and "overwrite: fail" in done["fail"]["error_message"]
    assert (out / "fail" / "image.webp").read_bytes() == b"already there"
    assert done["replace"]["status"] == "completed"
    assert (out / "replace" / "image.webp").read_bytes()[:4] == b"RIFF"  # the WebP replaced it
    assert {o["name"] for o in done["replace"]["outputs"] if o["delivered_url"]} == {"image.webp"}


def test_a_failed_delivery_is_retried_and_shows_on_the_job_page(drt: Runtime, photo: Path) -> None:
    late = f"late-{uuid.uuid4().hex[:8]}"  # the bucket does not exist yet: the first attempts fail
    apply_workflow(drt, _workflow("WF-DELIVER-LATE", f"s3://{late}/{{job_code}}/{{output}}"))
    admin = auth_repo.create_key(drt.engine, role="admin").plaintext
    with LiveServer(drt) as server, _worker(drt):
        job_id = _submit(server, admin, photo, "WF-DELIVER-LATE").json()["id"]

        def failed_attempts() -> list[dict[str, Any]]:
            steps = ops.get_job(drt.engine, job_id)["steps"]
            return [s for s in steps if s["step_name"] == "Deliver" and s["status"] == "failed"]

        first = wait_until(failed_attempts, timeout=60, message="a failed delivery attempt")
        assert first[0]["error_class"] == "transient" and late in first[0]["error_message"]
        assert ops.get_job(drt.engine, job_id)["status"] in ("queued", "processing")  # waiting for its retry
        boto3.client("s3").create_bucket(Bucket=late)
        job = _wait_final(drt, job_id)
    assert job["status"] == "completed", job["error_message"]
    deliver_runs = [s for s in job["steps"] if s["step_name"] == "Deliver"]
    assert deliver_runs[-1]["status"] == "completed" and len(deliver_runs) >= 2
    assert [s["step_name"] for s in job["steps"] if s["status"] == "completed"].count("Thumbnail") == 1  # resumed
    assert {o["delivered_url"] for o in job["outputs"]} == {f"s3://{late}/{job['job_code']}/{n}" for n in OUTPUTS}
    assert any(e["event_type"] == "retry" for e in job["events"])
    with TestClient(create_app(drt)) as client:
        form = client.get("/login?next=/")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        client.post("/login", data={"key": admin, "csrf_token": token, "next": "/"}, follow_redirects=False)
        page = client.get(f"/jobs/{job_id}").text
    assert "Deliver" in page and first[0]["error_message"][:40] in page  # the failed attempt, on the page
    assert f"s3://{late}/{job['job_code']}/thumbnail_64.jpg" in page  # where each output went


def test_per_job_overrides_only_to_allowed_prefixes(drt: Runtime, photo: Path, tmp_path: Path) -> None:
    apply_workflow(drt, _workflow("WF-DELIVER-DEFAULT", str(tmp_path / "default" / "{job_code}" / "{output}")))
    apply_workflow(drt, {"code": "WF-NO-DELIVER", "name": "n", "type": "image", "input_types": ["image/jpeg"],
                         "queue": "deliver", "steps": [{"name": "Thumbnail", "action": "create_thumbnail"}]})
    admin = auth_repo.create_key(drt.engine, role="admin").plaintext
    target = tmp_path / "public" / "media"
    override = str(target / "{metadata.slug}" / "{output_stem}.{ext}")
    with LiveServer(drt) as server, _worker(drt):
        refused = _submit(server, admin, photo, "WF-DELIVER-DEFAULT", deliver=override)
        assert refused.status_code == 403 and "not under a prefix" in refused.json()["detail"]
        h = {"Authorization": f"Bearer {admin}"}
        put = httpx.put(f"{server.url}/v1/delivery/prefixes", headers=h,
                        json={"prefixes": [str(tmp_path / "public"), "s3://cdn-allowed/videos"]})
        assert put.status_code == 200, put.text
        elsewhere = str(tmp_path / "public-other" / "{output}")
        sneaky = _submit(server, admin, photo, "WF-DELIVER-DEFAULT", deliver=elsewhere)
        assert sneaky.status_code == 403  # /public does not allow /public-other
        res = _submit(server, admin, photo, "WF-DELIVER-DEFAULT", deliver=override, metadata='{"slug": "../../etc"}')
        assert res.status_code == 202, res.text
        no_step = _submit(server, admin, photo, "WF-NO-DELIVER", deliver=override)
        assert no_step.status_code == 422 and "no deliver" in no_step.json()["detail"]
        job = _wait_final(drt, res.json()["id"])
    assert job["status"] == "completed", job["error_message"]
    delivered = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert delivered == ["etc/image.webp", "etc/manifest.json", "etc/thumbnail_64.jpg"]  # never outside the prefix
    assert not (tmp_path / "default").exists()  # the override replaced the workflow's destination


def test_templates_stay_inside_their_prefix() -> None:
    job = {"id": 7, "job_code": "JOB-1", "input_filename": "../../x y.mov", "tenant_id": "t",
           "job_metadata": {"slug": "../../../root", "n": 3}}
    out = {"name": "hls/seg 1.ts", "step_name": "HLS"}
    spec = DeliverDef.model_validate("/srv/media/{metadata.slug}/{input_stem}/{output}")
    target = resolve_target(spec, output_fields(job, "WF", out))
    assert target.path == Path("/srv/media/root/x_y/hls/seg_1.ts")
    spec = DeliverDef.model_validate("s3://b/v/{job_code}/{metadata.n}/{ext}")
    s3 = resolve_target(spec, output_fields(job, "W", out))
    assert (s3.bucket, s3.key, s3.url) == ("b", "v/JOB-1/3/ts", "s3://b/v/JOB-1/3/ts")
    assert DeliverDef.model_validate("s3://b/prefix").to == "s3://b/prefix/{job_code}/{output}"
    with pytest.raises(ValueError, match="unknown field"):
        DeliverDef.model_validate("s3://b/{nope}")
    with pytest.raises(InvalidInput):
        resolve_target(DeliverDef.model_validate("/srv/{metadata.missing}/{output}"), output_fields(job, "W", out))
    assert allowed(["/srv/media"], DeliverDef.model_validate("/srv/media/x/{output}"))
    assert not allowed(["/srv/media"], DeliverDef.model_validate("/srv/media-private/{output}"))
    assert allowed(["s3://cdn/videos"], DeliverDef.model_validate("s3://cdn/videos/{output}"))
    assert not allowed(["s3://cdn/videos"], DeliverDef.model_validate("s3://cdn/videos2/{output}"))
    assert not allowed(["/srv"], DeliverDef.model_validate("s3://srv/{output}"))
