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
