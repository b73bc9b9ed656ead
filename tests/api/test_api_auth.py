"""Authentication, roles and tenant isolation."""

from __future__ import annotations

import io

import sqlalchemy as sa
from fastapi.testclient import TestClient

from mediamill.runtime import Runtime
from mediamill.store import auth_repo
from mediamill.store.tables import dead_letters, job_outputs

from .support import Keys
from .test_api_jobs import submit_file

TUS = {"Tus-Resumable": "1.0.0"}


def test_no_key_bad_key_revoked_key(client: TestClient, keys: Keys, rt: Runtime) -> None:
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs").headers["www-authenticate"].startswith("Bearer")
    assert client.get("/v1/jobs", headers=Keys.h("mm_deadbeef_nope")).status_code == 401
    assert client.get("/v1/jobs", headers=Keys.h("garbage")).status_code == 401
    assert client.get("/healthz").status_code == 200
    created = auth_repo.create_key(rt.engine, role="viewer")
    assert client.get("/v1/jobs", headers=Keys.h(created.plaintext)).status_code == 200
    auth_repo.revoke_key(rt.engine, created.id)
    assert client.get("/v1/jobs", headers=Keys.h(created.plaintext)).status_code == 401


def test_keys_are_stored_hashed(keys: Keys, rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT prefix, key_hash FROM api_keys")).all()
    secrets = [k.split("_", 2)[2] for k in (keys.admin, keys.viewer)]
    assert all(s not in h for _p, h in stored for s in secrets)


def test_roles(client: TestClient, keys: Keys, rt: Runtime) -> None:
    assert submit_file(client, keys.viewer).status_code == 403
    job = submit_file(client, keys.submitter).json()
    with rt.engine.begin() as conn:
        dl = conn.execute(dead_letters.insert().values(job_id=job["id"], tenant_id="default", error_class="transient",
                                                       workflow_code="WF-TEST-NOOP").returning(dead_letters.c.id)
                          ).scalar_one()
    assert client.post(f"/v1/dead-letters/{dl}/retry", headers=Keys.h(keys.submitter)).status_code == 403
    assert client.post("/v1/dead-letters/retry", json={}, headers=Keys.h(keys.submitter)).status_code == 403
    assert client.post("/v1/queues/test/pause", headers=Keys.h(keys.viewer)).status_code == 403
    assert client.post("/v1/queues/test/pause", headers=Keys.h(keys.operator)).status_code == 403  # shared queue
    assert client.post("/v1/queues/test/pause", headers=Keys.h(keys.admin)).status_code == 200  # the root admin
    assert client.post("/v1/keys", json={"role": "viewer"}, headers=Keys.h(keys.operator)).status_code == 403
    made = client.post("/v1/keys", json={"role": "viewer", "name": "ci"}, headers=Keys.h(keys.admin))
    assert made.status_code == 201 and made.json()["key"].startswith("mm_")
    assert client.get("/v1/me", headers=Keys.h(made.json()["key"])).json()["role"] == "viewer"


def test_other_tenant_gets_404_everywhere(client: TestClient, keys: Keys, rt: Runtime) -> None:
    job = submit_file(client, keys.submitter).json()
    jid = job["id"]
    with rt.engine.begin() as conn:
        conn.execute(job_outputs.insert().values(job_id=jid, tenant_id="default", name="out.txt",
                                                 storage_key="outputs/default/x", mime_type="text/plain"))
        dl = conn.execute(dead_letters.insert().values(job_id=jid, tenant_id="default", error_class="transient")
                          .returning(dead_letters.c.id)).scalar_one()
    key = client.get(f"/v1/jobs/{jid}", headers=Keys.h(keys.admin)).json()["input_key"]
    upload = client.post("/v1/uploads", headers=Keys.h(keys.submitter, **TUS, **{"Upload-Length": "5"}))
    uid = upload.headers["location"].rsplit("/", 1)[1]
    b = Keys.h(keys.other)
    calls = [
        ("GET", f"/v1/jobs/{jid}", None), ("POST", f"/v1/jobs/{jid}/cancel", None),
        ("POST", f"/v1/jobs/{jid}/retry", None), ("PATCH", f"/v1/jobs/{jid}", {"priority": 1}),
        ("GET", f"/v1/jobs/{jid}/outputs", None), ("GET", f"/v1/jobs/{jid}/outputs/out.txt", None),
        ("GET", f"/v1/jobs/{jid}/input", None), ("GET", f"/v1/jobs/{jid}/events", None),
        ("GET", f"/v1/uploads/{uid}", None), ("POST", f"/v1/dead-letters/{dl}/retry", None),
        ("POST", f"/v1/dead-letters/{dl}/discard", None),
        ("POST", "/v1/jobs", {"upload_id": uid}), ("POST", "/v1/jobs", {"storage_key": key}),
    ]
    for method, url, body in calls:
        res = client.request(method, url, headers=b, json=body)
        assert res.status_code == 404, (method, url, res.status_code, res.text)
    for method in ("HEAD", "PATCH", "DELETE"):
        tus = {**b, **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        res = client.request(method, f"/v1/uploads/{uid}", headers=tus, content=b"abc" if method == "PATCH" else None)
        assert res.status_code == 404, (method, res.status_code)
    assert client.get("/v1/jobs", headers=b).json()["items"] == []
    assert client.get("/v1/dead-letters", headers=b).json()["items"] == []
    assert client.get(f"/v1/jobs/{jid}", headers=Keys.h(keys.viewer)).status_code == 200


def test_workflows_are_tenant_scoped(client: TestClient, keys: Keys) -> None:
    doc = "code: WF-BETA-ONLY\nname: b\ntype: generic\nsteps:\n  - {name: n, action: noop}\n"
    res = client.post("/v1/workflows", content=doc, headers=Keys.h(keys.other, **{"Content-Type": "application/yaml"}))
    assert res.status_code == 201, res.text
    assert client.get("/v1/workflows/WF-BETA-ONLY", headers=Keys.h(keys.viewer)).status_code == 404
    codes = [w["code"] for w in client.get("/v1/workflows", headers=Keys.h(keys.viewer)).json()["items"]]
    assert "WF-BETA-ONLY" not in codes and "WF-TEST-NOOP" in codes
    res = client.post("/v1/jobs", headers=Keys.h(keys.submitter), files={"file": ("a", io.BytesIO(b"x" * 10))},
                      data={"workflow": "WF-BETA-ONLY"})
    assert res.status_code == 404


def test_other_tenant_gets_404_for_channels(client: TestClient, keys: Keys) -> None:
    res = client.post("/v1/channels", headers=Keys.h(keys.admin),
                      json={"kind": "email", "name": "ops", "config": {"to": ["ops@example.com"]}})
    assert res.status_code == 201, res.text
    cid = res.json()["id"]
    b = Keys.h(keys.other)
    for method, url, body in (("GET", f"/v1/channels/{cid}", None), ("PATCH", f"/v1/channels/{cid}", {"name": "x"}),
                              ("DELETE", f"/v1/channels/{cid}", None), ("POST", f"/v1/channels/{cid}/test", None),
                              ("POST", f"/v1/channels/{cid}/rotate-secret", None)):
        res = client.request(method, url, headers=b, json=body)
        assert res.status_code == 404, (method, url, res.status_code)


def test_root_admin_revokes_keys_of_any_tenant(client: TestClient, keys: Keys) -> None:
    root, beta = Keys.h(keys.admin), Keys.h(keys.other)
    made = client.post("/v1/keys", json={"role": "submitter", "tenant": "beta", "name": "leaked"}, headers=root)
    assert made.status_code == 201
    leaked = made.json()
    assert client.get("/v1/me", headers=Keys.h(leaked["key"])).status_code == 200
    listed = client.get("/v1/keys", params={"tenant": "beta"}, headers=root).json()["items"]
    assert leaked["id"] in [k["id"] for k in listed] and {k["tenant_id"] for k in listed} == {"beta"}
    every = client.get("/v1/keys", params={"tenant": "*"}, headers=root).json()["items"]
    assert {k["tenant_id"] for k in every} == {"default", "beta"}
    assert client.delete(f"/v1/keys/{leaked['id']}", headers=root).status_code == 200
    assert client.get("/v1/me", headers=Keys.h(leaked["key"])).status_code == 401
    # a tenant's admin stays inside its tenant
    default_key = client.post("/v1/keys", json={"role": "viewer"}, headers=root).json()
    assert client.delete(f"/v1/keys/{default_key['id']}", headers=beta).status_code == 404
    assert client.get("/v1/keys", params={"tenant": "default"}, headers=beta).status_code == 403
    assert client.get("/v1/me", headers=Keys.h(default_key["key"])).status_code == 200
