"""Routing rules as a managed resource and the review queue's way out, over HTTP."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mediamill.engine.worker import Worker
from mediamill.notify.alert_rules import load_rules
from mediamill.notify.alerting import apply_rule, observe
from mediamill.observability.dbgauges import collect_db_gauges
from mediamill.runtime import Runtime
from mediamill.store.timeutil import utcnow

from .backends import BACKENDS, runtime_on
from .media import make_video
from .support import Keys, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=BACKENDS)
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """The API tests' runtime, once on SQLite and once on PostgreSQL."""
    yield from runtime_on(request.param, tmp_path / "data")


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


def submit(client: TestClient, key: str, name: str, data: bytes, **fields: str) -> dict[str, Any]:
    res = client.post("/v1/jobs", files={"file": (name, data)}, data=fields, headers=Keys.h(key))
    assert res.status_code == 202, res.text
    return dict(res.json())


def job(client: TestClient, key: str, job_id: int) -> dict[str, Any]:
    res = client.get(f"/v1/jobs/{job_id}", headers=Keys.h(key))
    assert res.status_code == 200, res.text
    return dict(res.json())


def queue(client: TestClient, key: str, name: str) -> dict[str, Any] | None:
    items = client.get("/v1/queues", headers=Keys.h(key)).json()["items"]
    return next((q for q in items if q["name"] == name), None)


def test_video_without_workflow_waits_in_review_then_is_routed(rt: Runtime, client: TestClient, keys: Keys,
                                                                tmp_path: Path) -> None:
    video = make_video(tmp_path / "clip.mp4").read_bytes()
    accepted = submit(client, keys.submitter, "clip.mp4", video)
    assert accepted["status"] == "pending" and accepted["workflow"] == "WF-REVIEW"
    routing = accepted["routing"]
    assert routing["decision"] == "review" and routing["rule"] is None
    assert set(routing["candidates"]) == {"WF-VIDEO-TRANSCODE", "WF-VIDEO-ANALYZE"}
    assert "WF-VIDEO-TRANSCODE" in routing["reason"] and "WF-VIDEO-ANALYZE" in routing["reason"]
    detail = job(client, keys.viewer, accepted["id"])
    assert detail["routing"] == routing
    event = next(e for e in detail["events"] if e["event_type"] == "routing")
    assert event["data"]["evaluated"] == [] and event["data"]["decision"] == "review"

    review = queue(client, keys.viewer, "review")
    assert review is not None and review["depth"] == 1 and review["waiting"] == 1
    with rt.engine.connect() as conn:  # the Prometheus gauge counts it too
        depth = next(f for f in collect_db_gauges(conn, live_seconds=90) if f.name == "mediamill_queue_depth")
    assert [s.value for s in depth.samples if s.labels == {"queue": "review", "state": "queued"}] == [1]
    refused = client.post(f"/v1/jobs/{accepted['id']}/retry", headers=Keys.h(keys.operator))
    assert refused.status_code == 409 and "route" in refused.json()["detail"]
    assert client.post(f"/v1/jobs/{accepted['id']}/route", json={"workflow": "WF-TEST-NOPE"},
                       headers=Keys.h(keys.operator)).status_code == 404
    assert client.post(f"/v1/jobs/{accepted['id']}/route", json={"workflow": "WF-VIDEO-TRANSCODE"},
                       headers=Keys.h(keys.submitter)).status_code == 403
    assert client.post(f"/v1/jobs/{accepted['id']}/route", json={"workflow": "WF-VIDEO-TRANSCODE"},
                       headers=Keys.h(keys.other)).status_code == 404  # another tenant's job

    res = client.post(f"/v1/jobs/{accepted['id']}/route", json={"workflow": "WF-VIDEO-TRANSCODE"},
                      headers=Keys.h(keys.operator))
    assert res.status_code == 202, res.text
    assert res.json()["queue"] == "video_processing" and res.json()["routing"]["decision"] == "manual"
    again = client.post(f"/v1/jobs/{accepted['id']}/route", json={"workflow": "WF-VIDEO-ANALYZE"},
                        headers=Keys.h(keys.operator))
    assert again.status_code == 409  # no longer in review
    assert queue(client, keys.viewer, "review")["depth"] == 0  # type: ignore[index]

    worker = Worker(rt, pools={"*": 2}).start()
    try:
        wait_until(lambda: job(client, keys.viewer, accepted["id"])["status"] in ("completed", "failed"),
                   timeout=150, message="routed job finished")
    finally:
        worker.stop(grace=10)
    done = job(client, keys.viewer, accepted["id"])
    assert done["status"] == "completed", done.get("error_message")
    assert done["workflow_code"] == "WF-VIDEO-TRANSCODE" and done["id"] == accepted["id"]
    assert any(o["mime_type"] == "video/mp4" for o in done["outputs"])


def test_rule_routes_an_image_and_a_broken_condition_is_422(client: TestClient, keys: Keys) -> None:
    op = Keys.h(keys.operator)
    broken = client.post("/v1/routing-rules", headers=op, json={
        "name": "images", "condition": "input.mime.startsWith('image/'", "workflow": "WF-IMAGE-PROCESS"})
    assert broken.status_code == 422
    body = broken.json()
    assert body["position"] == {"line": 1, "column": 23} and "syntax error" in body["detail"]
    typo = client.post("/v1/routing-rules", headers=op, json={
        "name": "images", "condition": "input.mimetype == 'image/png'", "workflow": "WF-IMAGE-PROCESS"})
    assert typo.status_code == 422 and "unknown field input.mimetype" in typo.json()["detail"]
    not_bool = client.post("/v1/routing-rules", headers=op, json={
        "name": "images", "condition": "input.size", "workflow": "WF-IMAGE-PROCESS"})
    assert not_bool.status_code == 422
    unknown_wf = client.post("/v1/routing-rules", headers=op, json={
        "name": "images", "condition": "true", "workflow": "WF-NOT-THERE"})
    assert unknown_wf.status_code == 422

    created = client.post("/v1/routing-rules", headers=op, json={
        "name": "images", "condition": "input.mime.startsWith('image/')", "workflow": "WF-IMAGE-PROCESS"})
    assert created.status_code == 201, created.text
    rule = created.json()
    assert client.post("/v1/routing-rules", headers=op, json={
        "name": "images", "condition": "true", "workflow": "WF-IMAGE-PROCESS"}).status_code == 409

    accepted = submit(client, keys.submitter, "red.png", png_bytes())
    assert accepted["workflow"] == "WF-IMAGE-PROCESS" and accepted["status"] == "queued"
    assert accepted["routing"]["decision"] == "rule" and accepted["routing"]["rule"] == "images"
    detail = job(client, keys.viewer, accepted["id"])
    assert detail["routing"]["rule"] == "images"
    event = next(e for e in detail["events"] if e["event_type"] == "routing")
    assert event["data"]["evaluated"] == [{"rule": "images", "id": rule["id"], "workflow": "WF-IMAGE-PROCESS",
                                           "condition": "input.mime.startsWith('image/')", "result": True}]

    # explain: the same decision without submitting; a video still goes to review
    explained = client.post("/v1/routing-rules/explain", headers=Keys.h(keys.viewer),
                            json={"filename": "a.png"}).json()
    assert explained["workflow"] == "WF-IMAGE-PROCESS" and explained["rule"] == "images"
    video = client.post("/v1/routing-rules/explain", headers=Keys.h(keys.viewer),
                        json={"filename": "a.mp4"}).json()
    assert video["decision"] == "review" and video["evaluated"][0]["result"] is False

    # tenant-scoped: the other tenant neither sees nor uses the rule
    other = Keys.h(keys.other)
    assert client.get("/v1/routing-rules", headers=other).json()["items"] == []
    assert client.get(f"/v1/routing-rules/{rule['id']}", headers=other).status_code == 404
    assert client.delete(f"/v1/routing-rules/{rule['id']}", headers=other).status_code == 404
    theirs = submit(client, keys.other, "red.png", png_bytes())
    assert theirs["workflow"] == "WF-IMAGE-PROCESS" and theirs["routing"]["decision"] == "type"


def test_rules_are_ordered_patched_reordered_and_deleted(client: TestClient, keys: Keys) -> None:
    op = Keys.h(keys.operator)

    def add(name: str, condition: str, workflow: str) -> int:
        res = client.post("/v1/routing-rules", headers=op,
                          json={"name": name, "condition": condition, "workflow": workflow})
        assert res.status_code == 201, res.text
        return int(res.json()["id"])

    first = add("vip-analyze", "job.metadata.kind == 'analysis'", "WF-VIDEO-ANALYZE")
    second = add("videos", "input.mime.startsWith('video/')", "WF-VIDEO-TRANSCODE")
    assert [r["id"] for r in client.get("/v1/routing-rules", headers=op).json()["items"]] == [first, second]

    def decide(metadata: dict[str, Any]) -> dict[str, Any]:
        return dict(client.post("/v1/routing-rules/explain", headers=op,
                                json={"filename": "x.mp4", "metadata": metadata}).json())

    assert decide({"kind": "analysis"})["rule"] == "vip-analyze"
    assert decide({})["rule"] == "videos"  # a missing metadata key is an error, not a match
    assert decide({"kind": "analysis", "n": 10**30})["rule"] == "vip-analyze"  # beyond CEL's int64: a double
    assert "error" in decide({})["evaluated"][0]

    reordered = client.post("/v1/routing-rules/reorder", headers=op, json={"ids": [second, first]})
    assert [r["id"] for r in reordered.json()["items"]] == [second, first]
    assert decide({"kind": "analysis"})["rule"] == "videos"
    assert client.post("/v1/routing-rules/reorder", headers=op, json={"ids": [second]}).status_code == 422

    patched = client.patch(f"/v1/routing-rules/{second}", headers=op, json={"enabled": False})
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert decide({"kind": "analysis"})["rule"] == "vip-analyze"
    bad = client.patch(f"/v1/routing-rules/{second}", headers=op, json={"condition": "input.mime =="})
    assert bad.status_code == 422 and bad.json()["position"]["column"] > 0
    assert client.patch(f"/v1/routing-rules/{second}", headers=Keys.h(keys.viewer),
                        json={"enabled": True}).status_code == 403
    assert client.delete(f"/v1/routing-rules/{first}", headers=op).status_code == 204
    assert client.get(f"/v1/routing-rules/{first}", headers=op).status_code == 404
    assert decide({"kind": "analysis"})["decision"] == "review"  # the remaining rule is disabled


IMAGE_THUMBS = """code: WF-IMAGE-THUMBS
name: thumbnails only
type: image
input_types: [image/png]
steps:
  - name: Thumb
    action: noop
"""


def test_applying_an_ambiguous_workflow_warns_and_names_the_rule(client: TestClient, keys: Keys) -> None:
    admin = Keys.h(keys.admin, **{"Content-Type": "application/yaml"})
    res = client.post("/v1/workflows", headers=admin, content=IMAGE_THUMBS)
    assert res.status_code == 201, res.text
    [warning] = res.json()["warnings"]
    assert "image/png" in warning and "WF-IMAGE-PROCESS" in warning and "WF-IMAGE-THUMBS" in warning
    assert "mediamill routes add" in warning and "--workflow WF-IMAGE-THUMBS" in warning
    png = submit(client, keys.submitter, "red.png", png_bytes())
    assert png["workflow"] == "WF-REVIEW"  # the warning was right

    client.post("/v1/routing-rules", headers=Keys.h(keys.operator), json={
        "name": "png", "condition": "input.mime == 'image/png'", "workflow": "WF-IMAGE-THUMBS"})
    again = client.put("/v1/workflows/WF-IMAGE-THUMBS", headers=admin,
                       content=IMAGE_THUMBS.replace("thumbnails only", "thumbs"))
    assert again.status_code == 200 and again.json()["warnings"] == []


def test_review_waiting_too_long_fires_the_alert_template(rt: Runtime, client: TestClient, keys: Keys,
                                                          tmp_path: Path) -> None:
    submit(client, keys.submitter, "clip.mp4", make_video(tmp_path / "c.mp4", seconds=1).read_bytes())
    rule = next(r for r in load_rules(rt.settings) if r.kind == "review_wait")
    with rt.engine.begin() as conn:
        assert not observe(conn, rule, rt.settings, utcnow())[0].active  # just arrived
        later = utcnow() + timedelta(hours=2)
        [obs] = observe(conn, rule, rt.settings, later)
        assert obs.active and obs.labels == {"queue": "review"} and "1 jobs wait in review" in obs.summary
        transitions = apply_rule(conn, rule, [obs], later)
    assert [t.state for t in transitions][-1] == "firing"


def test_cli_routes_route_and_apply_warning(rt: Runtime, client: TestClient, keys: Keys, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mediamill.cli.main import app as cli

    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(rt.settings.data_dir))
    monkeypatch.setenv("MEDIAMILL_DATABASE_URL", rt.settings.database_url)
    run = CliRunner().invoke
    clip = make_video(tmp_path / "clip.mp4", seconds=1)
    result = run(cli, ["routes", "explain", str(clip)])
    assert result.exit_code == 0 and "→ WF-REVIEW [review]" in result.output
    bad = run(cli, ["routes", "add", "--name", "v", "--condition", "input.mime ==", "--workflow", "WF-VIDEO-ANALYZE"])
    assert bad.exit_code == 1 and "syntax error at line 1" in bad.output
    added = run(cli, ["routes", "add", "--name", "analysis", "--condition", "job.metadata.kind == 'analysis'",
                      "--workflow", "WF-VIDEO-ANALYZE"])
    assert added.exit_code == 0, added.output
    result = run(cli, ["routes", "explain", str(clip), "--metadata", "kind=analysis"])
    assert "→ WF-VIDEO-ANALYZE [rule]" in result.output and "analysis: job.metadata.kind" in result.output
    assert "analysis" in run(cli, ["routes", "list"]).output
    assert run(cli, ["routes", "remove", "analysis"]).exit_code == 0
    assert run(cli, ["routes", "list", "--json"]).output.strip() == "[]"

    result = run(cli, ["submit", str(clip), "--wait"])  # a person routes it: no waiting for a worker forever
    said = " ".join((result.output + result.stderr).split())
    assert result.exit_code == 1 and "waits in review" in said and "mediamill route" in said, said
    assert "WF-VIDEO-TRANSCODE" in said and "WF-VIDEO-ANALYZE" in said and "no live worker" not in said
    queues = json.loads(run(cli, ["queues", "--json"]).output)  # the CLI counts the review backlog too
    review = next(q for q in queues if q["name"] == "review")
    assert review["depth"] == review["waiting"] == 1

    waiting = submit(client, keys.submitter, "clip.mp4", clip.read_bytes())
    result = run(cli, ["route", str(waiting["id"]), "WF-VIDEO-ANALYZE"])
    assert result.exit_code == 0 and "queued on WF-VIDEO-ANALYZE" in result.output
    assert run(cli, ["route", str(waiting["id"]), "WF-VIDEO-ANALYZE"]).exit_code == 1  # no longer in review

    doc = tmp_path / "thumbs.yaml"
    doc.write_text(IMAGE_THUMBS)
    result = run(cli, ["workflows", "apply", "-f", str(doc)])
    assert result.exit_code == 0 and "warning:" in result.output and "mediamill routes add" in result.output
