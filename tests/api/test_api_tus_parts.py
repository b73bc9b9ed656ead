"""Where unfinished tus uploads keep their bytes: S3 multipart parts with a pending tail in the bucket,
or a marked part file; refused bytes never count; the assembled upload is checked against the
checksum the client declared."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.api.routes.uploads import remove_expired
from mediamill.api.tusparts import PART_SIZE
from mediamill.runtime import Runtime
from mediamill.store import uploads_repo
from mediamill.store.tables import upload_sessions
from tests.helpers import moto_s3

from .support import Keys, make_runtime

TUS = {"Tus-Resumable": "1.0.0"}
OCT = {"Content-Type": "application/offset+octet-stream"}
MiB = 1024 * 1024


def _meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _session(rt: Runtime, upload_id: str) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        return uploads_repo.get_session(conn, upload_id, tenant_id=None)


def test_the_assembled_upload_must_match_its_declared_checksum(client: TestClient, keys: Keys, rt: Runtime) -> None:
    h = Keys.h(keys.submitter, **TUS)
    data = os.urandom(300_000)
    wrong = _meta(checksum=f"sha256 {_sha256_b64(data[:-1] + b'x')}")
    res = client.post("/v1/uploads", headers={**h, "Upload-Length": str(len(data)), "Upload-Metadata": wrong})
    url = "/v1/uploads/" + res.headers["location"].rsplit("/", 1)[1]
    assert client.patch(url, headers={**h, **OCT, "Upload-Offset": "0"}, content=data[:1000]).status_code == 204
    res = client.patch(url, headers={**h, **OCT, "Upload-Offset": "1000"}, content=data[1000:])
    assert res.status_code == 460 and "checksum in its metadata" in res.json()["detail"], res.text
    assert client.get(url, headers=h).status_code == 404  # dropped: all of its bytes came and were wrong
    stored = [p for p in (rt.settings.data_dir / "storage").rglob("*") if p.is_file() and ".tmp" not in p.parts]
    assert stored == [] and list((rt.settings.data_dir / "uploads").iterdir()) == []

    right = _meta(checksum=f"md5 {base64.b64encode(hashlib.md5(data).digest()).decode()}")
    res = client.post("/v1/uploads", headers={**h, "Upload-Length": str(len(data)), "Upload-Metadata": right})
    url = "/v1/uploads/" + res.headers["location"].rsplit("/", 1)[1]
    assert client.patch(url, headers={**h, **OCT, "Upload-Offset": "0"}, content=data).status_code == 204
    assert client.get(url, headers=h).json()["complete"] is True

    bad = _meta(checksum="crc32 AAAA")
    res = client.post("/v1/uploads", headers={**h, "Upload-Length": "3", "Upload-Metadata": bad})
    assert res.status_code == 422 and "crc32" in res.json()["detail"]


# ------------------------------------------------------------------------------ S3
@pytest.fixture
def s3_rt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Runtime]:
    with moto_s3(monkeypatch):
        runtime = make_runtime(tmp_path / "data", storage_url="s3://tus-parts/mm")
        runtime.storage.ensure_bucket()  # type: ignore[attr-defined]
        yield runtime
        runtime.close()


def _bucket(rt: Runtime) -> tuple[list[Any], list[Any]]:
    client = rt.storage.client  # type: ignore[attr-defined]
    uploads = client.list_multipart_uploads(Bucket="tus-parts").get("Uploads", [])
    pending = client.list_objects_v2(Bucket="tus-parts", Prefix="mm/tus/").get("Contents", [])
    return uploads, pending


def test_s3_refused_bytes_never_count_and_termination_leaves_nothing(s3_rt: Runtime) -> None:
    rt = s3_rt
    keys = Keys(rt)
    h = Keys.h(keys.submitter, **TUS)
    data = os.urandom(PART_SIZE + 3 * MiB)
    with TestClient(create_app(rt)) as client:
        res = client.post("/v1/uploads", headers={**h, "Upload-Defer-Length": "1"})
        upload_id = res.headers["location"].rsplit("/", 1)[1]
        url = f"/v1/uploads/{upload_id}"
        assert client.patch(url, headers={**h, **OCT, "Upload-Offset": "0"}, content=data[:MiB]).status_code == 204
        before = _session(rt, upload_id)["part_state"]
        assert before["mpu"] is None and [size for _key, size in before["pending"]] == [MiB]  # waits in the bucket
        # a PATCH that fills a part but fails its checksum: the part it sent is not counted
        wrong = base64.b64encode(hashlib.sha1(b"nope").digest()).decode()
        res = client.patch(url, headers={**h, **OCT, "Upload-Offset": str(MiB), "Upload-Checksum": f"sha1 {wrong}"},
                           content=data[MiB:PART_SIZE + MiB])
        assert res.status_code == 460, res.text
        after = _session(rt, upload_id)
        assert after["upload_offset"] == MiB and after["part_state"] == before
        # the refused PATCH's own tail object and the multipart upload it started are gone again
        assert len(_bucket(rt)[1]) == 1 and _bucket(rt)[0] == []
        # small PATCHes each add a pending object of their own bytes; the one that fills a part sends it
        res = client.patch(url, headers={**h, **OCT, "Upload-Offset": str(MiB)}, content=data[MiB:2 * MiB])
        assert res.status_code == 204
        state = _session(rt, upload_id)["part_state"]
        assert [size for _key, size in state["pending"]] == [MiB, MiB] and len(_bucket(rt)[1]) == 2
        res = client.patch(url, headers={**h, **OCT, "Upload-Offset": str(2 * MiB)},
                           content=data[2 * MiB:PART_SIZE + MiB])
        assert res.status_code == 204
        state = _session(rt, upload_id)["part_state"]
        assert [p[0] for p in state["parts"]] == [1] and state["parts"][0][2] >= PART_SIZE
        assert sum(size for _key, size in state["pending"]) == PART_SIZE + MiB - state["parts"][0][2]
        assert len(_bucket(rt)[1]) == len(state["pending"])  # the pending objects the part took are gone
        assert client.delete(url, headers=h).status_code == 204
        assert _bucket(rt) == ([], [])  # the multipart upload is aborted and the pending object removed

        # a deferred length declared on the last PATCH completes the upload from its parts
        res = client.post("/v1/uploads", headers={**h, "Upload-Defer-Length": "1"})
        url = res.headers["location"].replace("http://testserver", "")
        res = client.patch(url, headers={**h, **OCT, "Upload-Offset": "0"}, content=data[:PART_SIZE])
        assert res.status_code == 204
        res = client.patch(url, headers={**h, **OCT, "Upload-Offset": str(PART_SIZE),
                                         "Upload-Length": str(len(data))}, content=data[PART_SIZE:])
        assert res.status_code == 204, res.text
        session = _session(rt, url.rsplit("/", 1)[1])
        assert session["completed_at"] is not None and session["part_state"] is None
        with rt.storage.open(session["storage_key"]) as fh:
            assert fh.read() == data
        assert uploads_repo.server_facts(session)["sha256"] == hashlib.sha256(data).hexdigest()
        assert _bucket(rt) == ([], [])

        # an expired upload's parts and pending tail are removed by the cleaner
        res = client.post("/v1/uploads", headers={**h, "Upload-Length": str(len(data))})
        stale = res.headers["location"].rsplit("/", 1)[1]
        res = client.patch(f"/v1/uploads/{stale}", headers={**h, **OCT, "Upload-Offset": "0"},
                           content=data[:PART_SIZE + MiB])
        assert res.status_code == 204 and _bucket(rt) != ([], [])
        with rt.engine.begin() as conn:
            conn.execute(sa.update(upload_sessions).where(upload_sessions.c.id == stale)
                         .values(expires_at=datetime(2000, 1, 1)))
        assert remove_expired(rt) == 1 and _bucket(rt) == ([], [])

        # an empty upload is an empty object
        res = client.post("/v1/uploads", headers={**h, "Upload-Length": "0"})
        session = _session(rt, res.headers["location"].rsplit("/", 1)[1])
        assert session["completed_at"] is not None and rt.storage.size(session["storage_key"]) == 0
