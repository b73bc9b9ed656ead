"""Submitting and reading jobs over HTTP (no worker: jobs stay queued unless a test starts one)."""

from __future__ import annotations

import io
import json

from fastapi.testclient import TestClient

from mediamill.runtime import Runtime

from .support import Keys

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


def submit_file(client: TestClient, key: str, data: bytes = b"hello world\n" * 100, *, workflow: str = "WF-TEST-NOOP",
                filename: str = "note.txt", headers: dict[str, str] | None = None, **fields: str) -> object:
    return client.post("/v1/jobs", headers=Keys.h(key, **(headers or {})),
                       files={"file": (filename, io.BytesIO(data), "application/octet-stream")},
                       data={"workflow": workflow, **fields})


def test_multipart_submit_returns_202_with_links(client: TestClient, keys: Keys, rt: Runtime) -> None:
    res = submit_file(client, keys.submitter, priority="7", metadata=json.dumps({"customer": "acme"}))
    assert res.status_code == 202, res.text
    body = res.json()
    assert body["status"] == "queued" and body["priority"] == 7 and body["workflow"] == "WF-TEST-NOOP"
    assert res.headers["location"].endswith(f"/v1/jobs/{body['id']}")
    assert set(body["links"]) == {"self", "events", "outputs", "cancel"}
    job = client.get(f"/v1/jobs/{body['id']}", headers=Keys.h(keys.viewer)).json()
    assert job["input_filename"] == "note.txt"
    assert client.get(f"/v1/jobs/{body['id']}/input", headers=Keys.h(keys.viewer)).content == b"hello world\n" * 100


def test_json_submit_by_storage_key_and_list(client: TestClient, keys: Keys) -> None:
    first = submit_file(client, keys.submitter).json()
    job = client.get(f"/v1/jobs/{first['id']}", headers=Keys.h(keys.admin)).json()
    res = client.post("/v1/jobs", headers=Keys.h(keys.submitter),
                      json={"storage_key": job["input_key"], "workflow": "WF-TEST-NOOP"})
    assert res.status_code == 202, res.text
    page = client.get("/v1/jobs?limit=1", headers=Keys.h(keys.viewer)).json()
    assert len(page["items"]) == 1 and page["next_before_id"] == res.json()["id"]
    older = client.get(f"/v1/jobs?limit=5&before_id={page['next_before_id']}", headers=Keys.h(keys.viewer)).json()
    assert [j["id"] for j in older["items"]] == [first["id"]]


def test_idempotency_key_replays_and_conflicts(client: TestClient, keys: Keys, rt: Runtime) -> None:
    import sqlalchemy as sa

    h = {"Idempotency-Key": "order-42"}
    a = submit_file(client, keys.submitter, headers=h)
    b = submit_file(client, keys.submitter, headers=h)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] == b.json()["id"] and b.json()["replayed"] is True
    c = submit_file(client, keys.submitter, b"other bytes", headers=h)
    assert c.status_code == 409
    with rt.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM workflow_jobs")).scalar() == 1
    inputs = [p for p in (rt.settings.data_dir / "storage" / "inputs").rglob("*") if p.is_file()]
    assert len(inputs) == 1  # replays and conflicts left no second input behind


def test_cancel_priority_and_404s(client: TestClient, keys: Keys) -> None:
    job = submit_file(client, keys.submitter).json()
    patched = client.patch(f"/v1/jobs/{job['id']}", json={"priority": 42}, headers=Keys.h(keys.operator))
    assert patched.status_code == 200 and patched.json()["priority"] == 42
    res = client.post(f"/v1/jobs/{job['id']}/cancel", headers=Keys.h(keys.submitter))
    assert res.status_code == 200 and res.json()["status"] in ("cancelled", "cancelling")
    missing = client.get("/v1/jobs/999999", headers=Keys.h(keys.viewer))
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_unknown_workflow_and_bad_input(client: TestClient, keys: Keys, rt: Runtime) -> None:
    res = submit_file(client, keys.submitter, workflow="WF-NOPE")
    assert res.status_code == 404
    assert not [p for p in (rt.settings.data_dir / "storage" / "inputs").rglob("*") if p.is_file()]
    res = client.post("/v1/jobs", headers=Keys.h(keys.submitter), json={"workflow": "WF-TEST-NOOP"})
    assert res.status_code == 422
    res = client.post("/v1/jobs", headers=Keys.h(keys.submitter), json={"url": "http://127.0.0.1/x.mp4"})
    assert res.status_code == 422 and res.json()["error_class"] == "invalid_input"  # SSRF guard


def test_rate_limit_returns_429_with_retry_after(tmp_path, keys: Keys, rt: Runtime) -> None:
    from mediamill.api.app import create_app

    rt.settings.submit_rate_per_minute = 6  # burst of 10, then 1 every 10 s
    with TestClient(create_app(rt)) as c:
        codes = [submit_file(c, keys.submitter).status_code for _ in range(12)]
        assert codes[:10] == [202] * 10 and codes[-1] == 429
        res = submit_file(c, keys.submitter)
        assert int(res.headers["retry-after"]) >= 1


def test_output_download_supports_ranges(client: TestClient, keys: Keys, rt: Runtime) -> None:
    from mediamill.storage import new_key
    from mediamill.store.tables import job_outputs

    job = submit_file(client, keys.submitter).json()
    key = new_key("outputs", "default")
    rt.storage.put(key, io.BytesIO(b"0123456789" * 100))
    with rt.engine.begin() as conn:
        conn.execute(job_outputs.insert().values(job_id=job["id"], tenant_id="default", name="digits.txt",
                                                 storage_key=key, mime_type="text/plain", bytes=1000))
    listed = client.get(f"/v1/jobs/{job['id']}/outputs", headers=Keys.h(keys.viewer)).json()["items"]
    assert listed[0]["name"] == "digits.txt" and "storage_key" not in listed[0]
    url = f"/v1/jobs/{job['id']}/outputs/digits.txt"
    part = client.get(url, headers=Keys.h(keys.viewer, Range="bytes=10-19"))
    assert part.status_code == 206 and part.content == b"0123456789"
    assert part.headers["content-range"] == "bytes 10-19/1000"
    assert client.get(url, headers=Keys.h(keys.viewer)).content == b"0123456789" * 100
    assert client.get(f"/v1/jobs/{job['id']}/outputs/nope.txt", headers=Keys.h(keys.viewer)).status_code == 404


def test_cors_for_browser_tus_clients(tmp_path, keys: Keys, rt: Runtime) -> None:
    from mediamill.api.app import create_app

    rt.settings.cors_origins = "https://app.example.com"
    with TestClient(create_app(rt)) as c:
        res = c.options("/v1/uploads", headers={"Origin": "https://app.example.com",
                                                "Access-Control-Request-Method": "PATCH",
                                                "Access-Control-Request-Headers": "upload-offset,tus-resumable"})
        assert res.headers["access-control-allow-origin"] == "https://app.example.com"
        res = c.get("/v1/me", headers=Keys.h(keys.viewer, Origin="https://app.example.com"))
        assert "Upload-Offset" in res.headers["access-control-expose-headers"]
