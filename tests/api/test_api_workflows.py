"""Workflow CRUD over HTTP: create, update (new version), versions, diff, activate, deactivate, validate."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .support import Keys

DOC = """code: WF-API-DEMO
name: Demo
type: generic
steps:
  - name: First
    action: noop
"""
YAML = {"Content-Type": "application/yaml"}


def test_crud_versions_diff_activate(client: TestClient, keys: Keys) -> None:
    op = Keys.h(keys.operator, **YAML)
    res = client.post("/v1/workflows", content=DOC, headers=op)
    assert res.status_code == 201 and res.json()["version"] == 1
    assert client.post("/v1/workflows", content=DOC, headers=op).status_code == 409
    v2 = DOC + "  - name: Second\n    action: sleep\n    params: {seconds: 0.1}\n"
    res = client.put("/v1/workflows/WF-API-DEMO", content=v2, headers=op)
    assert res.status_code == 200 and res.json()["version"] == 2
    as_json = {"code": "WF-API-DEMO", "name": "Demo", "type": "generic",
               "steps": [{"name": "Only", "action": "noop"}]}
    res = client.put("/v1/workflows/WF-API-DEMO", json=as_json, headers=Keys.h(keys.operator))
    assert res.json()["version"] == 3
    versions = client.get("/v1/workflows/WF-API-DEMO/versions", headers=Keys.h(keys.viewer)).json()["items"]
    assert [v["version"] for v in versions] == [1, 2, 3] and versions[-1]["active"]
    diff = client.get("/v1/workflows/WF-API-DEMO/diff?from=1&to=2", headers=Keys.h(keys.viewer)).json()
    assert diff["steps_added"] == ["Second"] and "+- name: Second" in diff["diff"]
    res = client.post("/v1/workflows/WF-API-DEMO/activate", json={"version": 1}, headers=Keys.h(keys.operator))
    assert res.status_code == 200
    got = client.get("/v1/workflows/WF-API-DEMO", headers=Keys.h(keys.viewer)).json()
    assert got["version"] == 1 and got["definition"]["steps"][0]["name"] == "First"
    assert client.post("/v1/workflows/WF-API-DEMO/deactivate", headers=Keys.h(keys.operator)).status_code == 200
    res = client.post("/v1/jobs", headers=Keys.h(keys.submitter), files={"file": ("a", b"abc" * 5)},
                      data={"workflow": "WF-API-DEMO"})
    assert res.status_code == 409


def test_validate_reports_located_problems(client: TestClient, keys: Keys) -> None:
    bad = DOC.replace("action: noop", "action: nope\n    on_failure: skip")
    res = client.post("/v1/workflows/validate", content=bad, headers=Keys.h(keys.viewer, **YAML)).json()
    assert res["valid"] is False
    assert any(p.startswith("steps[0].on_failure") for p in res["problems"]), res["problems"]
    ok = client.post("/v1/workflows/validate", content=DOC, headers=Keys.h(keys.viewer, **YAML)).json()
    assert ok["valid"] is True and ok["steps"] == 1
    res = client.post("/v1/workflows", content="code: [", headers=Keys.h(keys.operator, **YAML))
    assert res.status_code == 422 and res.json()["errors"][0].startswith("line ")


def test_builtins_need_an_admin(client: TestClient, keys: Keys) -> None:
    doc = DOC.replace("WF-API-DEMO", "WF-TEST-NOOP")
    res = client.put("/v1/workflows/WF-TEST-NOOP", content=doc, headers=Keys.h(keys.operator, **YAML))
    assert res.status_code == 403
    assert client.put("/v1/workflows/WF-TEST-NOOP", content=doc, headers=Keys.h(keys.admin, **YAML)).status_code == 200
    assert client.put("/v1/workflows/WF-OTHER", content=doc, headers=Keys.h(keys.admin, **YAML)).status_code == 422
