"""The SDK's calls for review routing, reprocess, routing rules, rollouts and shadow runs: each sends
the request the API documents (checked with a recording transport; the drift test checks the paths
and parameters against the OpenAPI document)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mediamill.client import Client


@pytest.fixture
def recorded() -> tuple[Client, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.method == "DELETE" and "/routing-rules/" in request.url.path:
            return httpx.Response(204)
        return httpx.Response(200, json={"items": [{"id": 3, "name": "images"}], "count": 2, "ok": True})

    http = httpx.Client(transport=httpx.MockTransport(answer))
    return Client("http://mm.test", "mm_k", http_client=http), sent


def _body(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


CALLS = [
    (lambda mm: mm.route(7, "WF-IMAGE-PROCESS", version=2), "POST", "/v1/jobs/7/route",
     {"workflow": "WF-IMAGE-PROCESS", "version": 2}),
    (lambda mm: mm.reprocess(7, steps="all"), "POST", "/v1/jobs/7/reprocess", {"steps": "all"}),
    (lambda mm: mm.reprocess_many(workflow="WF-A", status=["failed"], dry_run=True), "POST", "/v1/jobs/reprocess",
     {"workflow": "WF-A", "status": ["failed"], "steps": "failed", "dry_run": True}),
    (lambda mm: mm.routes.list(), "GET", "/v1/routing-rules", None),
    (lambda mm: mm.routes.create("images", "input.mime.startsWith('image/')", "WF-IMAGE-PROCESS"), "POST",
     "/v1/routing-rules", {"name": "images", "condition": "input.mime.startsWith('image/')",
                           "workflow": "WF-IMAGE-PROCESS", "enabled": True}),
    (lambda mm: mm.routes.update(3, enabled=False), "PATCH", "/v1/routing-rules/3", {"enabled": False}),
    (lambda mm: mm.routes.delete(3), "DELETE", "/v1/routing-rules/3", None),
    (lambda mm: mm.routes.reorder([3, 1]), "POST", "/v1/routing-rules/reorder", {"ids": [3, 1]}),
    (lambda mm: mm.routes.explain(filename="a.jpg", mime="image/jpeg", size=10), "POST",
     "/v1/routing-rules/explain", {"filename": "a.jpg", "mime": "image/jpeg", "size": 10}),
    (lambda mm: mm.rollouts.start("WF-A", 2, 10, max_failure_delta=0.1), "POST", "/v1/workflows/WF-A/rollout",
     {"version": 2, "percent": 10, "guard": {"max_failure_delta": 0.1, "min_jobs": 20}}),
    (lambda mm: mm.rollouts.status("WF-A"), "GET", "/v1/workflows/WF-A/rollout", None),
    (lambda mm: mm.rollouts.promote("WF-A"), "POST", "/v1/workflows/WF-A/rollout/promote", None),
    (lambda mm: mm.rollouts.abort("WF-A"), "DELETE", "/v1/workflows/WF-A/rollout", None),
    (lambda mm: mm.shadows.start("WF-A", 3, 25), "POST", "/v1/workflows/WF-A/shadow",
     {"version": 3, "sample_percent": 25}),
    (lambda mm: mm.shadows.stop("WF-A"), "DELETE", "/v1/workflows/WF-A/shadow", None),
    (lambda mm: mm.shadows.promote("WF-A"), "POST", "/v1/workflows/WF-A/shadow/promote", None),
    (lambda mm: mm.shadows.report("WF-A", version=3), "GET", "/v1/workflows/WF-A/shadow/report", None),
]


@pytest.mark.parametrize(("call", "method", "path", "body"), CALLS, ids=[c[2] + " " + c[1] for c in CALLS])
def test_each_call_sends_the_documented_request(recorded: tuple[Client, list[httpx.Request]], call: Any,
                                                method: str, path: str, body: Any) -> None:
    mm, sent = recorded
    call(mm)
    assert (sent[-1].method, sent[-1].url.path) == (method, path)
    assert _body(sent[-1]) == body
    assert sent[-1].headers["authorization"] == "Bearer mm_k"
