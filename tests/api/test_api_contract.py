"""Every Server-Sent Event of GET /v1/jobs/{id}/events matches the schema /openapi.json documents."""

from __future__ import annotations

import io
import json

import httpx
import jsonschema

from mediamill.runtime import Runtime

from .support import Keys, LiveServer


def _frames(body: str) -> list[dict[str, str]]:
    """SSE frames as {field: value} (comment lines dropped)."""
    frames = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            frames.append(fields)
    return frames


def test_job_events_match_the_documented_event_schema(rt: Runtime, keys: Keys, live: LiveServer) -> None:
    job = httpx.post(f"{live.url}/v1/jobs", headers=Keys.h(keys.admin), data={"workflow": "WF-TEST-NOOP"},
                     files={"file": ("a.txt", io.BytesIO(b"hello events"))}).json()
    assert httpx.post(f"{live.url}/v1/jobs/{job['id']}/cancel", headers=Keys.h(keys.admin)).status_code < 300
    with httpx.stream("GET", f"{live.url}/v1/jobs/{job['id']}/events", headers=Keys.h(keys.viewer),
                      timeout=15) as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
        body = res.read().decode()  # the stream ends after the final status
    doc = httpx.get(f"{live.url}/openapi.json").json()
    event_schema = doc["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"][
        "text/event-stream"]["schema"]
    payload_schema = {**doc["components"]["schemas"]["JobEvent"], "components": doc["components"]}
    frames = _frames(body)
    assert [json.loads(f["data"])["data"].get("status") for f in frames if f["event"] == "status"] == [
        "queued", "cancelled"]
    for frame in frames:
        event = {**frame, "retry": int(frame["retry"])}
        jsonschema.validate(event, event_schema)
        assert event_schema["properties"]["data"]["contentMediaType"] == "application/json"
        jsonschema.validate(json.loads(frame["data"]), payload_schema)


def test_405_lists_every_method_of_the_path(client: object, keys: Keys) -> None:
    for path, documented in (("/v1/jobs", {"GET", "POST"}), ("/v1/channels/1", {"GET", "PATCH", "DELETE"}),
                             ("/v1/uploads/abc", {"HEAD", "PATCH", "DELETE", "GET"}),
                             ("/v1/workflows/validate", {"POST"})):
        res = client.options(path, headers=Keys.h(keys.admin))  # type: ignore[attr-defined]
        assert res.status_code == 405, path
        allowed = {m.strip() for m in res.headers["allow"].split(",")}
        assert documented <= allowed and allowed <= documented | {"HEAD"}, (path, allowed)


def test_tus_routes_document_their_headers_and_412(client: object) -> None:
    doc = client.get("/openapi.json").json()  # type: ignore[attr-defined]
    for method, path in (("post", "/v1/uploads"), ("head", "/v1/uploads/{upload_id}"),
                         ("patch", "/v1/uploads/{upload_id}"), ("delete", "/v1/uploads/{upload_id}")):
        op = doc["paths"][path][method]
        headers = {p["name"]: p for p in op["parameters"] if p["in"] == "header"}
        assert headers["Tus-Resumable"]["required"] and headers["Tus-Resumable"]["schema"]["enum"] == ["1.0.0"]
        assert "412" in op["responses"], (method, path)
    patch = doc["paths"]["/v1/uploads/{upload_id}"]["patch"]
    assert {p["name"] for p in patch["parameters"]} >= {"Upload-Offset", "Upload-Length"}
    assert "460" in patch["responses"]
