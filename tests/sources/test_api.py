"""Sources as a managed resource: the API (roles, tenants, validation), the CLI, the dashboard page and the
metrics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mediamill.api.app import create_app
from mediamill.cli.main import app as cli_app
from mediamill.observability import metrics
from mediamill.runtime import Runtime
from mediamill.sources.intake import SourceRunner
from tests.api.support import Keys
from tests.helpers import apply_workflow, make_runtime

from .conftest import ANYTHING, FAST
from .support import source_row


@pytest.fixture
def srt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_runtime(tmp_path / "data", "", metrics_dir="off", **FAST)
    apply_workflow(runtime, ANYTHING)
    yield runtime
    runtime.close()


@pytest.fixture
def client(srt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(srt)) as c:
        yield c


def _folder(folder: Path, **extra: object) -> dict[str, object]:
    return {"name": "inbox", "kind": "folder", "path": str(folder), "patterns": ["*.mov", "*.mp4"],
            "recursive": True, "after": "move", "workflow": "WF-INTAKE", "priority": 7, "enabled": True, **extra}


def test_crud_roles_and_tenants(client: TestClient, srt: Runtime, tmp_path: Path) -> None:
    keys = Keys(srt)
    h = Keys.h
    assert client.post("/v1/sources", json=_folder(tmp_path), headers=h(keys.viewer)).status_code == 403
    created = client.post("/v1/sources", json=_folder(tmp_path), headers=h(keys.operator))
    assert created.status_code == 201, created.text
    body = created.json()
    sid = body["id"]
    assert {k: body[k] for k in ("name", "kind", "path", "patterns", "recursive", "after", "workflow", "priority",
                                 "enabled")} == {k: v for k, v in _folder(tmp_path).items()}
    assert body["secret"].startswith("srcsec_")
    assert client.post("/v1/sources", json=_folder(tmp_path), headers=h(keys.operator)).status_code == 409
    listed = client.get("/v1/sources", headers=h(keys.viewer)).json()["items"]
    assert [s["name"] for s in listed] == ["inbox"] and "secret" not in listed[0]
    assert client.get("/v1/sources", headers=h(keys.other)).json()["items"] == []  # another tenant sees nothing
    assert client.get(f"/v1/sources/{sid}", headers=h(keys.other)).status_code == 404
    assert client.patch(f"/v1/sources/{sid}", json={"enabled": False}, headers=h(keys.other)).status_code == 404
    patched = client.patch(f"/v1/sources/{sid}", json={"enabled": False, "after": "delete"},
                           headers=h(keys.operator))
    assert patched.status_code == 200 and patched.json()["enabled"] is False and patched.json()["after"] == "delete"
    files = client.get(f"/v1/sources/{sid}/files", headers=h(keys.viewer))
    assert files.status_code == 200 and files.json() == {"items": [], "next_before": None}
    assert client.delete(f"/v1/sources/{sid}", headers=h(keys.viewer)).status_code == 403
    assert client.delete(f"/v1/sources/{sid}", headers=h(keys.operator)).status_code == 204
    assert client.get(f"/v1/sources/{sid}", headers=h(keys.viewer)).status_code == 404


@pytest.mark.parametrize(("change", "expected"), [
    ({"path": "relative/dir"}, "absolute"),
    ({"kind": "bucket"}, "url"),
    ({"after": "archive"}, "after"),
    ({"name": "bad name!"}, "name"),
    ({"patterns": []}, "patterns"),
])
def test_bad_sources_get_clear_errors(client: TestClient, srt: Runtime, tmp_path: Path, change: dict[str, object],
                                      expected: str) -> None:
    keys = Keys(srt)
    res = client.post("/v1/sources", json=_folder(tmp_path, **change), headers=Keys.h(keys.operator))
    assert res.status_code == 422, res.text
    assert expected in res.text
    assert client.get("/v1/sources", headers=Keys.h(keys.viewer)).json()["items"] == []  # nothing was half-made


def test_cli_manages_sources(srt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(srt.settings.data_dir))
    monkeypatch.setenv("MEDIAMILL_DATABASE_URL", "")
    runner = CliRunner()
    res = runner.invoke(cli_app, ["sources", "add", "cam", "--folder", str(tmp_path), "--workflow", "WF-INTAKE",
                                  "--pattern", "*.mp4", "--after", "move", "--metadata", '{"title": "{stem}"}'])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli_app, ["sources", "add", "drop", "--bucket", "s3://uploads/in", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["secret"].startswith("srcsec_")
    res = runner.invoke(cli_app, ["sources", "update", "cam", "--set", "settle_seconds=2", "--disable"])
    assert res.exit_code == 0, res.output
    shown = json.loads(runner.invoke(cli_app, ["sources", "show", "cam", "--json"]).output)
    assert shown["settle_seconds"] == 2 and shown["enabled"] is False and shown["metadata"] == {"title": "{stem}"}
    listed = json.loads(runner.invoke(cli_app, ["sources", "list", "--json"]).output)
    assert [s["name"] for s in listed] == ["cam", "drop"]
    bad = runner.invoke(cli_app, ["sources", "add", "x", "--folder", "rel/path"])
    assert bad.exit_code == 1 and "absolute" in bad.output
    assert runner.invoke(cli_app, ["sources", "delete", "drop"]).exit_code == 0
    assert runner.invoke(cli_app, ["deliveries", "allow", "s3://cdn/videos"]).exit_code == 0
    assert json.loads(runner.invoke(cli_app, ["deliveries", "prefixes", "--json"]).output) == ["s3://cdn/videos"]


def test_dashboard_page_and_metrics_show_sources(client: TestClient, srt: Runtime, tmp_path: Path) -> None:
    keys = Keys(srt)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    created = client.post("/v1/sources", json=_folder(inbox, patterns=["*"], settle_seconds=0, max_queue=1),
                          headers=Keys.h(keys.operator)).json()
    (inbox / "one.mov").write_text("one")
    (inbox / "two.mov").write_text("two")
    (inbox / "dead.mov").symlink_to(inbox / "missing.mov")
    metrics.reset_for_tests(None)
    metrics.install_telemetry_handlers()
    runner = SourceRunner(srt, source_row(srt, created["id"]), "me")
    for _ in range(3):
        runner.run_once()
    form = client.get("/login?next=/sources")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"key": keys.viewer, "csrf_token": token, "next": "/sources"}, follow_redirects=False)
    page = client.get("/sources")
    assert page.status_code == 200
    assert 'data-source="inbox"' in page.text and "backpressure" in page.text  # one job queued, limit 1
    assert 'data-skipped-file="dead.mov"' in page.text and "unreadable" in page.text
    detail = client.get(f"/sources/{created['id']}").text
    assert 'data-file="one.mov"' in detail or 'data-file="two.mov"' in detail
    text = client.get("/metrics").text
    assert 'mediamill_source_files_total{outcome="unreadable",source="inbox"} 1.0' in text
    assert 'mediamill_source_files_total{outcome="submitted",source="inbox"} 1.0' in text
    lag = re.search(r'mediamill_source_lag_seconds\{source="inbox"\} ([0-9.e+-]+)', text)
    assert lag and float(lag.group(1)) > 0  # one file still waits behind the backpressure
    assert 'mediamill_source_backpressure{source="inbox"} 1.0' in text


def test_another_tenants_workflow_cannot_be_named(client: TestClient, srt: Runtime, tmp_path: Path) -> None:
    from mediamill.store import workflow_repo
    from mediamill.workflows.loader import validate_document

    with srt.engine.begin() as conn:
        workflow_repo.save_version(conn, validate_document({**ANYTHING, "code": "WF-BETA-ONLY"}), tenant_id="beta")
    keys = Keys(srt)
    mine = client.post("/v1/sources", json=_folder(tmp_path, workflow="WF-BETA-ONLY"), headers=Keys.h(keys.operator))
    assert mine.status_code == 404 and "no workflow" in mine.text  # as if it did not exist, like an unknown one
    nope = client.post("/v1/sources", json=_folder(tmp_path, workflow="WF-NOPE"), headers=Keys.h(keys.operator))
    assert nope.status_code == 404 and "no workflow" in nope.text
    theirs = client.post("/v1/sources", json=_folder(tmp_path, workflow="WF-BETA-ONLY"), headers=Keys.h(keys.other))
    assert theirs.status_code == 201


def test_the_schema_says_what_a_valid_body_is_and_patches_conflict_as_409(client: TestClient, srt: Runtime,
                                                                          tmp_path: Path) -> None:
    keys, h = Keys(srt), Keys.h
    spec = client.get("/openapi.json").json()["components"]["schemas"]["SourceSpec"]
    kinds = {b["properties"]["kind"]["const"]: b for b in spec["oneOf"]}
    assert kinds["folder"]["required"] == ["kind", "path"] and kinds["bucket"]["required"] == ["kind", "url"]
    bad = [{"kind": "bucket", "url": "", "path": ""}, {"kind": "bucket", "url": "s3://b", "path": "/x"},
           {"polling": 0}, {"recursive": "yes"}]  # no coercion: 0 is not false
    for extra in bad:
        res = client.post("/v1/sources", json={**_folder(tmp_path), **extra}, headers=h(keys.operator))
        assert res.status_code == 422, (extra, res.text)
    sid = client.post("/v1/sources", json=_folder(tmp_path), headers=h(keys.operator)).json()["id"]
    patch = client.patch(f"/v1/sources/{sid}", json={"patterns": []}, headers=h(keys.operator))
    assert patch.status_code == 422 and "patterns" in patch.text  # the same limits as on create
    clash = client.patch(f"/v1/sources/{sid}", json={"url": "s3://bucket/in"}, headers=h(keys.operator))
    assert clash.status_code == 409 and "url" in clash.json()["detail"]
    as_float = client.patch(f"/v1/sources/{sid}", json={"priority": 33.0}, headers=h(keys.operator))
    assert as_float.json()["priority"] == 33  # 33.0 is an integer in JSON
    assert client.patch(f"/v1/sources/{sid}", json={"priority": True}, headers=h(keys.operator)).status_code == 422
    reset = client.patch(f"/v1/sources/{sid}", json={"after": None, "name": None, "priority": None},
                         headers=h(keys.operator))
    assert reset.status_code == 200, reset.text
    body = reset.json()
    assert (body["name"], body["after"], body.get("priority")) == ("inbox", "keep", None)  # null = the default
    assert client.get(f"/v1/sources/{sid}", headers=h(keys.viewer)).json()["after"] == "keep"


def test_delivery_prefixes_are_checked_by_the_schema(client: TestClient, srt: Runtime) -> None:
    keys, h = Keys(srt), Keys.h
    for bad in ([""], ["s3://"], ["relative/dir"]):
        res = client.put("/v1/delivery/prefixes", json={"prefixes": bad}, headers=h(keys.admin))
        assert res.status_code == 422, (bad, res.text)
    ok = client.put("/v1/delivery/prefixes", json={"prefixes": ["/srv/out", "s3://cdn/v"]}, headers=h(keys.admin))
    assert ok.status_code == 200 and ok.json()["prefixes"] == ["/srv/out", "s3://cdn/v"]
