"""Bucket sources on moto's S3 server: incremental listing (continuation tokens, a stored high-water mark),
signed bucket events, exactly once across a restart, and a badly signed event refused."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import sqlalchemy as sa

from mediamill.runtime import Runtime
from mediamill.sources import intake
from mediamill.sources.manager import SourceManager
from mediamill.sources.notifications import sign
from mediamill.storage.s3 import S3Storage
from mediamill.store import auth_repo
from tests.helpers import LiveServer, apply_workflow, make_runtime, wait_until

from .conftest import ANYTHING, FAST
from .support import add_source, files, jobs_by_path, source_row


@pytest.fixture(params=["local-storage", "s3-storage"])
def bucket_rt(request: pytest.FixtureRequest, s3_env: str, tmp_path: Path) -> Iterator[Runtime]:
    """SQLite with local storage, or with S3 storage (then objects are copied in server-side)."""
    storage = "" if request.param == "local-storage" else "s3://store/mm"
    runtime = make_runtime(tmp_path / "data", "", storage_url=storage, **FAST)
    if storage:
        assert isinstance(runtime.storage, S3Storage)
        runtime.storage.ensure_bucket()
    apply_workflow(runtime, ANYTHING)
    yield runtime
    runtime.close()


def _s3() -> Any:
    return boto3.client("s3")


@pytest.fixture
def bucket() -> str:
    """A fresh bucket per test (moto's server lives for the whole module)."""
    name = f"media-{uuid.uuid4().hex[:8]}"
    _s3().create_bucket(Bucket=name)
    return name


def _event(key: str, etag: str, size: int, bucket: str) -> dict[str, Any]:
    """What MinIO's webhook target posts for a PUT."""
    return {"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key.replace(" ", "+"), "size": size, "eTag": etag}}}]}


def test_listed_objects_and_a_posted_event_become_jobs_once(bucket_rt: Runtime, bucket: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rt = bucket_rt
    monkeypatch.setattr(intake, "LIST_PAGE", 3)  # 10 objects: four pages joined by continuation tokens
    s3 = _s3()
    for i in range(10):
        s3.put_object(Bucket=bucket, Key=f"incoming/clip {i:02}.txt", Body=f"clip {i}".encode())
    s3.put_object(Bucket=bucket, Key="elsewhere/skip.txt", Body=b"not under the prefix")
    src = add_source(rt, name="uploads", kind="bucket", url=f"s3://{bucket}/incoming", poll_seconds=3600)
    secret = src["secret"]
    with LiveServer(rt) as server:
        manager = SourceManager(rt).start()
        try:
            wait_until(lambda: len(jobs_by_path(rt)) == 10, timeout=30, message="10 listed objects taken")
            assert source_row(rt, src["id"])["high_water"] == "incoming/clip 09.txt"
            # a new object: the listing will not come back for an hour, the bucket event brings it now
            put = s3.put_object(Bucket=bucket, Key="incoming/late arrival.txt", Body=b"late")
            body = json.dumps(_event("incoming/late arrival.txt", put["ETag"].strip('"'), 4, bucket)).encode()
            url = f"{server.url}/v1/sources/{src['id']}/events"
            res = httpx.post(url, content=body, headers={"Authorization": f"Bearer {secret}",
                                                         "Content-Type": "application/json"})
            assert res.status_code == 202, res.text
            assert res.json() == {"accepted": 1, "new": 1, "ignored": 0}
            wait_until(lambda: len(jobs_by_path(rt)) == 11, timeout=30, message="the event's object taken")
            # the same notification delivered twice (S3 and MinIO deliver at least once) changes nothing
            res = httpx.post(url, content=body, headers={"X-Mediamill-Signature": sign(secret, body)})
            assert res.status_code == 202 and res.json()["new"] == 0
        finally:
            manager.stop()
    taken = jobs_by_path(rt)
    assert sorted(taken) == sorted([f"incoming/clip {i:02}.txt" for i in range(10)] + ["incoming/late arrival.txt"])
    assert {f["origin"] for f in files(rt, src["id"])} == {"listing", "event"}

    before = source_row(rt, src["id"])["last_scan_at"]
    restarted = SourceManager(rt).start()  # a new process: lists again from the start, takes nothing twice
    try:
        wait_until(lambda: source_row(rt, src["id"])["last_scan_at"] != before, timeout=15, message="a new listing")
        time.sleep(0.5)
        assert len(jobs_by_path(rt)) == 11
        s3.put_object(Bucket=bucket, Key="incoming/zz after restart.txt", Body=b"new")
        restarted.wake(src["id"])  # listed from the high-water mark
        wait_until(lambda: len(jobs_by_path(rt)) == 12, timeout=15, message="the new object taken")
    finally:
        restarted.stop()
    assert all(len(v) == 1 for v in jobs_by_path(rt).values())
    with rt.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT input_size FROM workflow_jobs")).scalars().all()
    assert sorted(stored) == [3, 4] + [6] * 10  # every object copied in whole


def test_badly_signed_events_are_refused(bucket_rt: Runtime, bucket: str) -> None:
    rt = bucket_rt
    src = add_source(rt, name="guarded", kind="bucket", url=f"s3://{bucket}/in")
    body = json.dumps(_event("in/x.txt", "abc", 1, bucket)).encode()
    with LiveServer(rt) as server:
        url = f"{server.url}/v1/sources/{src['id']}/events"
        for headers in ({}, {"Authorization": "Bearer srcsec_wrong"}, {"X-Mediamill-Signature": sign("wrong", body)},
                        {"X-Mediamill-Signature": sign(src["secret"], body + b" ")}):
            res = httpx.post(url, content=body, headers=headers)
            assert res.status_code == 401, (headers, res.text)
            assert res.headers["content-type"].startswith("application/problem+json")
        unknown = httpx.post(f"{server.url}/v1/sources/999/events", content=body,
                             headers={"Authorization": f"Bearer {src['secret']}"})
        assert unknown.status_code == 401  # the same answer: ids cannot be probed
        ok = httpx.post(url, content=body, headers={"X-Mediamill-Signature": sign(src["secret"], body)})
        assert ok.status_code == 202
        other = httpx.post(url, content=json.dumps(_event("in/y.txt", "d", 1, bucket="other")).encode(),
                           headers={"Authorization": f"Bearer {src['secret']}"})
        assert other.json() == {"accepted": 0, "new": 0, "ignored": 1}
        operator = {"Authorization": f"Bearer {auth_repo.create_key(rt.engine, role='operator').plaintext}"}
        rotated = httpx.post(f"{server.url}/v1/sources/{src['id']}/rotate-secret", headers=operator).json()["secret"]
        assert rotated != src["secret"]
        old = httpx.post(url, content=body, headers={"Authorization": f"Bearer {src['secret']}"})
        assert old.status_code == 401  # the old secret stops working at once
        assert httpx.post(url, content=body, headers={"Authorization": f"Bearer {rotated}"}).status_code == 202
    stored = source_row(rt, src["id"])["secret"]
    assert stored not in (src["secret"], rotated) and stored not in rotated  # the database never holds it
    assert [f["path"] for f in files(rt, src["id"])] == ["in/x.txt"]
