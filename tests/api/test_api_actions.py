"""``GET /v1/actions`` and the workflow validation a writer of workflows relies on: every problem of
a document in one answer, unknown parameters with a suggestion and the valid names."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mediamill.actions.base import load_actions

from .support import Keys

YAML = {"Content-Type": "application/yaml"}
BROKEN = """code: WF-BROKEN
name: Broken in four places
type: image_processing
steps:
  - name: Resize
    action: resize_image
    on_failure: skip
    params: {width: 800, max_dimensoin: 100}
  - name: Thumb
    action: create_thumbnial
  - name: Optimize
    action: optimize_image
    params: {quality: 101}
"""


def test_actions_list_every_action_with_its_schema(client: TestClient, keys: Keys) -> None:
    res = client.get("/v1/actions", headers=Keys.h(keys.viewer))
    assert res.status_code == 200
    items = {a["name"]: a for a in res.json()["items"]}
    assert set(items) == set(load_actions())
    resize = items["resize_image"]
    assert resize["family"] == "image" and resize["isolated"] is True and resize["idempotent"] is True
    assert resize["params_schema"]["properties"]["max_dimension"]["default"] == 2000
    assert "invalid_input" in resize["errors"]
    images = client.get("/v1/actions?family=image", headers=Keys.h(keys.viewer)).json()["items"]
    assert images and {a["family"] for a in images} == {"image"}
    one = client.get("/v1/actions/resize_image", headers=Keys.h(keys.viewer))
    assert one.status_code == 200 and one.json() == resize
    missing = client.get("/v1/actions/resize_imag", headers=Keys.h(keys.viewer))
    assert missing.status_code == 404 and "did you mean 'resize_image'?" in missing.json()["detail"]
    assert client.get("/v1/actions").status_code == 401


def test_validation_reports_every_problem_in_one_pass(client: TestClient, keys: Keys) -> None:
    res = client.post("/v1/workflows/validate", content=BROKEN, headers=Keys.h(keys.viewer, **YAML)).json()
    assert res["valid"] is False
    problems = res["problems"]
    assert problems[0] == "steps[0].on_failure: expected stop|continue|retry, got 'skip'"
    assert ("steps[0].params.width: unknown parameter; resize_image takes max_dimension, format, quality"
            in problems)
    assert ("steps[0].params.max_dimensoin: unknown parameter (did you mean 'max_dimension'?); "
            "resize_image takes max_dimension, format, quality") in problems
    assert any(p.startswith("steps[1].action: unknown action 'create_thumbnial' (did you mean 'create_thumbnail'?)")
               for p in problems), problems
    assert any(p.startswith("steps[2].params.quality: Input should be less than or equal to 100") for p in problems)
    assert len(problems) == 5, problems
    saved = client.post("/v1/workflows", content=BROKEN, headers=Keys.h(keys.operator, **YAML))
    assert saved.status_code == 422 and saved.json()["errors"] == problems


def test_structural_and_semantic_problems_of_one_step_together(client: TestClient, keys: Keys) -> None:
    doc = BROKEN.replace("on_failure: skip", "timeout_seconds: -1\n    needs: [Nowhere]")
    res = client.post("/v1/workflows/validate", content=doc, headers=Keys.h(keys.viewer, **YAML))
    problems = res.json()["problems"]
    assert any(p.startswith("steps[0].timeout_seconds") for p in problems)
    assert "steps[0].needs: unknown step 'Nowhere'" in problems
    assert any(p.startswith("steps[1].action: unknown action") for p in problems)
