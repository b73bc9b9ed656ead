"""The tus protocol details, presigned local uploads, and the limits that keep uploads safe."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mediamill.api.app import create_app
from mediamill.runtime import Runtime

from .support import Keys

TUS = {"Tus-Resumable": "1.0.0"}
OCT = {"Content-Type": "application/offset+octet-stream"}


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != "secret_key" and not p.name.startswith(
        "mediamill.db")]


def _create(client: TestClient, key: str, length: int, **headers: str) -> str:
    res = client.post("/v1/uploads", headers=Keys.h(key, **TUS, **{"Upload-Length": str(length)}, **headers))
    assert res.status_code == 201, res.text
    return str(res.headers["location"].rsplit("/", 1)[1])


def test_options_discovery(client: TestClient) -> None:
    res = client.options("/v1/uploads")
    assert res.status_code == 204
    assert res.headers["tus-version"] == "1.0.0"
    assert {"creation", "creation-with-upload", "termination", "expiration", "checksum"} <= set(
        res.headers["tus-extension"].split(","))
    assert "sha1" in res.headers["tus-checksum-algorithm"]


def test_version_offset_checksum_termination(client: TestClient, keys: Keys) -> None:
    uid = _create(client, keys.submitter, 10, **{"Upload-Metadata": "filename " + base64.b64encode(b"a.txt").decode()})
    url = f"/v1/uploads/{uid}"
    h = Keys.h(keys.submitter, **TUS, **OCT)
    assert client.patch(url, headers={**h, "Tus-Resumable": "0.2.2", "Upload-Offset": "0"},
                        content=b"x").status_code == 412
    assert client.patch(url, headers={**h, "Upload-Offset": "3"}, content=b"abc").status_code == 409
    bad = "sha1 " + base64.b64encode(hashlib.sha1(b"zzzzz").digest()).decode()
    assert client.patch(url, headers={**h, "Upload-Offset": "0", "Upload-Checksum": bad},
                        content=b"01234").status_code == 460
    good = "sha1 " + base64.b64encode(hashlib.sha1(b"01234").digest()).decode()
    res = client.patch(url, headers={**h, "Upload-Offset": "0", "Upload-Checksum": good}, content=b"01234")
    assert res.status_code == 204 and res.headers["upload-offset"] == "5" and "upload-expires" in res.headers
    head = client.head(url, headers=Keys.h(keys.submitter, **TUS))
    assert head.headers["upload-offset"] == "5" and head.headers["upload-length"] == "10"
    assert head.headers["cache-control"] == "no-store"
    assert base64.b64encode(b"a.txt").decode() in head.headers["upload-metadata"]
    assert client.patch(url, headers={**h, "Upload-Offset": "5"}, content=b"0123456").status_code == 413
    assert client.delete(url, headers=Keys.h(keys.submitter, **TUS)).status_code == 204
    assert client.head(url, headers=Keys.h(keys.submitter, **TUS)).status_code == 404


def test_creation_with_upload_and_defer_length(client: TestClient, keys: Keys) -> None:
    res = client.post("/v1/uploads", headers=Keys.h(keys.submitter, **TUS, **OCT, **{"Upload-Length": "4"}),
                      content=b"abcd")
    assert res.status_code == 201 and res.headers["upload-offset"] == "4"
    state = client.get(res.headers["location"].replace("http://testserver", ""), headers=Keys.h(keys.viewer)).json()
    assert state["complete"] and state["length"] == 4
    res = client.post("/v1/uploads", headers=Keys.h(keys.submitter, **TUS, **{"Upload-Defer-Length": "1"}))
    url = res.headers["location"].replace("http://testserver", "")
    assert client.head(url, headers=Keys.h(keys.submitter, **TUS)).headers["upload-defer-length"] == "1"
    res = client.patch(url, headers=Keys.h(keys.submitter, **TUS, **OCT, **{"Upload-Offset": "0",
                                                                            "Upload-Length": "2"}), content=b"hi")
    assert res.status_code == 204
    assert client.get(url, headers=Keys.h(keys.viewer)).json()["complete"] is True


def test_expired_upload_is_gone(client: TestClient, keys: Keys, rt: Runtime) -> None:
    import sqlalchemy as sa

    uid = _create(client, keys.submitter, 10)
    with rt.engine.begin() as conn:
        conn.execute(sa.text("UPDATE upload_sessions SET expires_at = '2000-01-01 00:00:00' WHERE id = :i"), {"i": uid})
    res = client.head(f"/v1/uploads/{uid}", headers=Keys.h(keys.submitter, **TUS))
    assert res.status_code == 410
    from mediamill.api.routes.uploads import remove_expired

    assert remove_expired(rt) == 1
    assert not (rt.settings.data_dir / "uploads" / f"{uid}.part").exists()


def test_oversized_uploads_get_413_and_leave_nothing(tmp_path: Path, keys: Keys, rt: Runtime) -> None:
    rt.settings.max_upload_bytes = 1000
    with TestClient(create_app(rt)) as c:
        storage = rt.settings.data_dir / "storage"
        before = _files(storage)
        res = c.post("/v1/jobs", headers=Keys.h(keys.submitter), files={"file": ("big", io.BytesIO(b"x" * 5000))},
                     data={"workflow": "WF-TEST-NOOP"})
        assert res.status_code == 413
        res = c.post("/v1/uploads", headers=Keys.h(keys.submitter, **TUS, **{"Upload-Length": "5000"}))
        assert res.status_code == 413
        presign = c.post("/v1/uploads/presign", json={"size": 5000}, headers=Keys.h(keys.submitter))
        assert presign.status_code == 422 and "size" in presign.json()["detail"]  # above the schema's maximum
        grant = c.post("/v1/uploads/presign", json={}, headers=Keys.h(keys.submitter)).json()
        put = c.put(grant["url"].replace("http://testserver", ""), content=b"y" * 5000)
        assert put.status_code == 413
        assert _files(storage) == before
        assert not [p for p in (storage / ".tmp").iterdir()]


def test_local_presigned_put(client: TestClient, keys: Keys) -> None:
    grant = client.post("/v1/uploads/presign", json={"filename": "n.txt"}, headers=Keys.h(keys.submitter)).json()
    url = grant["url"].replace("http://testserver", "")
    sig = url.rsplit("signature=", 1)[1]
    forged = url.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
    assert client.put(forged, content=b"data").status_code == 403
    assert client.post("/v1/jobs", json={"upload_id": grant["upload_id"], "workflow": "WF-TEST-NOOP"},
                       headers=Keys.h(keys.submitter)).status_code == 409  # not uploaded yet
    res = client.put(url, content=b"some text content\n")
    assert res.status_code == 201, res.text
    assert client.put(url, content=b"again").status_code == 409
    job = client.post("/v1/jobs", json={"upload_id": grant["upload_id"], "workflow": "WF-TEST-NOOP"},
                      headers=Keys.h(keys.submitter))
    assert job.status_code == 202
    detail = client.get(f"/v1/jobs/{job.json()['id']}", headers=Keys.h(keys.viewer)).json()
    assert detail["input_filename"] == "n.txt"


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "..\\..\\win.ini", "/abs/path.bin", "a\x00b\r\n.txt",
                                  "....//....//x"])
def test_path_traversal_in_filenames_never_reaches_the_filesystem(client: TestClient, keys: Keys, rt: Runtime,
                                                                  name: str) -> None:
    res = client.post("/v1/jobs", headers=Keys.h(keys.submitter), files={"file": (name, io.BytesIO(b"abc" * 10))},
                      data={"workflow": "WF-TEST-NOOP", "metadata": '{"path": "../../etc/shadow"}'})
    assert res.status_code == 202, res.text
    job = client.get(f"/v1/jobs/{res.json()['id']}", headers=Keys.h(keys.admin)).json()
    assert "/" not in (job["input_filename"] or "") and "\\" not in (job["input_filename"] or "")
    assert ".." not in job["input_key"] and job["input_key"].startswith("inputs/default/")
    root = rt.settings.data_dir.resolve()
    for p in root.rglob("*"):
        assert p.resolve().is_relative_to(root)
    download = client.get(f"/v1/jobs/{res.json()['id']}/input", headers=Keys.h(keys.viewer))
    assert download.status_code == 200 and "\r" not in download.headers["content-disposition"]


@pytest.mark.parametrize("key", ["../inputs/default/x", "inputs/default/../../etc/passwd", "/etc/passwd",
                                 "inputs\\default\\x", "inputs/beta/2026/01/01/abc", "outputs/default/x/y"])
def test_storage_keys_from_clients_are_refused(client: TestClient, keys: Keys, key: str) -> None:
    res = client.post("/v1/jobs", json={"storage_key": key, "workflow": "WF-TEST-NOOP"},
                      headers=Keys.h(keys.submitter))
    assert res.status_code in (404, 422), res.text


def test_request_body_limit(client: TestClient, keys: Keys) -> None:
    big = {"storage_key": "inputs/default/x", "metadata": {"pad": "x" * (2 * 1024 * 1024)}}
    res = client.post("/v1/jobs", json=big, headers=Keys.h(keys.submitter))
    assert res.status_code == 413


def test_empty_upload_completes_and_is_refused_as_input(client: TestClient, keys: Keys) -> None:
    uid = _create(client, keys.submitter, 0)
    assert client.get(f"/v1/uploads/{uid}", headers=Keys.h(keys.viewer)).json()["complete"] is True
    res = client.post("/v1/jobs", json={"upload_id": uid, "workflow": "WF-TEST-NOOP"}, headers=Keys.h(keys.submitter))
    assert res.status_code == 422 and "empty" in res.json()["detail"]
