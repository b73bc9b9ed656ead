"""tus PATCHes have one writer per upload, across API processes sharing one database; a deferred
length can never be declared below the bytes already received."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mediamill.runtime import Runtime
from mediamill.store import uploads_repo
from mediamill.store.tables import upload_sessions
from tests.helpers import BACKENDS, database_url, wait_until

from .support import Keys, LiveServer, make_runtime

TUS = {"Tus-Resumable": "1.0.0"}
OCT = {"Content-Type": "application/offset+octet-stream"}


def test_deferred_length_below_the_offset_is_409_and_changes_nothing(client: TestClient, keys: Keys) -> None:
    h = Keys.h(keys.submitter, **TUS)
    created = client.post("/v1/uploads", headers={**h, "Upload-Defer-Length": "1"})
    url = "/v1/uploads/" + created.headers["location"].rsplit("/", 1)[1]
    assert client.patch(url, headers={**h, **OCT, "Upload-Offset": "0"}, content=b"0123456789").status_code == 204
    for body in (b"", b"xy"):
        res = client.patch(url, headers={**h, **OCT, "Upload-Offset": "10", "Upload-Length": "4"}, content=body)
        assert res.status_code == 409, res.text
        assert "below the 10 bytes" in res.json()["detail"]
    head = client.head(url, headers=h)
    assert head.headers["upload-offset"] == "10" and head.headers["upload-defer-length"] == "1"
    assert "upload-length" not in head.headers
    res = client.patch(url, headers={**h, **OCT, "Upload-Offset": "10", "Upload-Length": "12"}, content=b"ab")
    assert res.status_code == 204 and res.headers["upload-offset"] == "12"
    assert client.get(url, headers=h).json()["complete"] is True
    # a length, once declared, never changes
    other = client.post("/v1/uploads", headers={**h, "Upload-Length": "8"}).headers["location"].rsplit("/", 1)[1]
    res = client.patch(f"/v1/uploads/{other}", headers={**h, **OCT, "Upload-Offset": "0", "Upload-Length": "9"},
                       content=b"abc")
    assert res.status_code == 409 and client.head(f"/v1/uploads/{other}", headers=h).headers["upload-offset"] == "0"


@pytest.fixture(params=BACKENDS)
def two_instances(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Runtime, LiveServer, LiveServer]]:
    """Two API processes' worth of app (each its own runtime and engine) on one database and data dir."""
    with database_url(request.param, tmp_path) as url:
        first = make_runtime(tmp_path / "data", url)
        second = make_runtime(tmp_path / "data", url)
        try:
            with LiveServer(first) as a, LiveServer(second) as b:
                yield first, a, b
        finally:
            first.close()
            second.close()


def _claimed(rt: Runtime, upload_id: str) -> bool:
    with rt.engine.connect() as conn:
        return conn.execute(sa.select(upload_sessions.c.patch_token)
                            .where(upload_sessions.c.id == upload_id)).scalar() is not None


def _slow_body(byte: bytes, chunks: int, pause: float) -> Iterator[bytes]:
    for _ in range(chunks):
        yield byte * 4096
        time.sleep(pause)


def test_concurrent_patches_on_two_instances_never_interleave(two_instances: tuple[Runtime, LiveServer, LiveServer]
                                                               ) -> None:
    rt, a, b = two_instances
    key = Keys(rt).submitter
    size = 4096 * 30
    created = httpx.post(f"{a.url}/v1/uploads", headers=Keys.h(key, **TUS, **{"Upload-Length": str(size)}))
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    headers = Keys.h(key, **TUS, **OCT, **{"Upload-Offset": "0"})
    results: dict[str, int] = {}

    def slow() -> None:
        res = httpx.patch(f"{a.url}/v1/uploads/{upload_id}", headers=headers, content=_slow_body(b"A", 30, 0.05),
                          timeout=30)
        results["slow"] = res.status_code

    writer = threading.Thread(target=slow)
    writer.start()
    wait_until(lambda: _claimed(rt, upload_id), timeout=15, message="the slow PATCH holds the upload")
    fast = httpx.patch(f"{b.url}/v1/uploads/{upload_id}", headers=headers, content=b"B" * size, timeout=30)
    writer.join(timeout=30)
    assert fast.status_code == 409, fast.text
    assert "another request is writing" in fast.json()["detail"]
    assert results["slow"] == 204
    with rt.engine.connect() as conn:
        session = uploads_repo.get_session(conn, upload_id, tenant_id=None)
    assert session["completed_at"] is not None and session["patch_token"] is None
    with rt.storage.open(session["storage_key"]) as fh:
        assert fh.read() == b"A" * size


def test_a_claim_left_by_a_dead_process_lapses(client: TestClient, keys: Keys, rt: Runtime) -> None:
    h = Keys.h(keys.submitter, **TUS)
    upload_id = client.post("/v1/uploads", headers={**h, "Upload-Length": "3"}).headers["location"].rsplit("/", 1)[1]
    uploads_repo.claim_patch(rt.engine, upload_id, tenant_id="default", offset=0, lease_seconds=0.2)  # never released
    url = f"/v1/uploads/{upload_id}"
    assert client.patch(url, headers={**h, **OCT, "Upload-Offset": "0"}, content=b"abc").status_code == 409
    # each refused PATCH changes nothing; once the dead claim's lease lapses the next one is taken
    wait_until(lambda: client.patch(url, headers={**h, **OCT, "Upload-Offset": "0"}, content=b"abc").status_code
               == 204, timeout=10, interval=0.1, message="the dead claim lapsed")
