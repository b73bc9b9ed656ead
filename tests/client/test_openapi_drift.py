"""The SDK's endpoint table and models agree with the server's OpenAPI document; the checker fails
on every kind of drift (a field added, removed or retyped, an endpoint moved, a schema newly named)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from mediamill.api.app import create_app
from tests.client.drift import drift
from tests.helpers import make_runtime


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rt = make_runtime(tmp_path_factory.mktemp("openapi") / "data", migrate=False)
    try:
        return create_app(rt).openapi()
    finally:
        rt.close()


def test_sdk_matches_the_openapi_document(openapi: dict[str, Any]) -> None:
    assert drift(openapi) == []


def _mutated(doc: dict[str, Any], change: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    if change == "field removed":
        del schemas["JobAccepted"]["properties"]["priority"]
    elif change == "field added":
        schemas["UploadOut"]["properties"]["sha256"] = {"type": "string"}
        schemas["UploadOut"]["required"].append("sha256")
    elif change == "field retyped":
        schemas["StatusOut"]["properties"]["id"] = {"type": "string"}
    elif change == "endpoint moved":
        doc["paths"]["/v1/jobs/{job_id}/abort"] = doc["paths"].pop("/v1/jobs/{job_id}/cancel")
    elif change == "query renamed":
        for p in doc["paths"]["/v1/jobs"]["get"]["parameters"]:
            if p["name"] == "before_id":
                p["name"] = "cursor"
    elif change == "response newly named":
        schemas["JobDetail"] = {"type": "object", "properties": {"id": {"type": "integer"}}}
        ok = doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]
        ok["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/JobDetail"}
    elif change == "pending endpoint lands without its parameter":
        doc["paths"]["/v1/workflows/{code}/shadow/report"] = {"get": {"parameters": [], "responses": {}}}
    elif change == "submit field gone":
        del schemas["JobSubmit"]["properties"]["metadata"]
    return doc


@pytest.mark.parametrize("change", ["field removed", "field added", "field retyped", "endpoint moved",
                                    "query renamed", "response newly named", "submit field gone",
                                    "pending endpoint lands without its parameter"])
def test_drift_is_caught(openapi: dict[str, Any], change: str) -> None:
    problems = drift(_mutated(openapi, change))
    assert problems, f"{change} went unnoticed"


def test_every_mirrored_model_is_used(openapi: dict[str, Any]) -> None:
    """The document's answers the SDK reads as typed models are named in it (no model guesses)."""
    from mediamill.client import _core

    typed = {e.model.__schema__ for e in _core.ENDPOINTS.values() if e.model is not None and e.model.__schema__}
    assert typed <= set(openapi["components"]["schemas"]), typed
    assert Path(__file__).with_name("drift.py").is_file()
