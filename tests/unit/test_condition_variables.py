"""The one builder of condition variables: a job row, a submission, the type-check sample."""

from __future__ import annotations

import json

import pytest

from mediamill.workflows.conditions import (
    ConditionError,
    JobFacts,
    check_condition,
    condition_variables,
    evaluate_condition,
    routing_variables,
)

ROW = {"id": 7, "tenant_id": "acme", "priority": 4, "input_mime": "image/png", "input_size": 2048,
       "input_filename": "cat.PNG", "job_metadata": {"k": "v"}, "submitted_by": "ann", "params": {"w": 100},
       "input_metadata": None}


def holds(expr: str, variables: dict) -> bool:
    return evaluate_condition(expr, variables)


@pytest.mark.parametrize("expr", [
    "input.filename == 'cat.PNG'", "input.mime == 'image/png'", "input.size == 2048",
    "job.id == 7", "job.tenant == 'acme'", "job.priority == 4", "job.metadata.k == 'v'", "job.submitter == 'ann'",
    "job.params.w == 100", "input.width == 0",  # a probe field not probed takes its typed default
])
def test_a_job_row_that_was_not_probed(expr: str) -> None:
    assert holds(expr, condition_variables(JobFacts.of_job(ROW), workflow_type="image", steps={}))


def test_the_probe_adds_its_fields_and_keeps_the_submission_facts() -> None:
    row = {**ROW, "input_metadata": json.dumps({"width": 640, "height": None, "format": "png"})}
    v = condition_variables(JobFacts.of_job(row), workflow_type="image", steps={})
    assert holds("input.width == 640 && input.height == 0 && input.filename == 'cat.PNG'", v)


def test_steps_are_there_for_when_conditions() -> None:
    v = condition_variables(JobFacts.of_job(ROW), workflow_type="generic",
                            steps={"a": {"status": "completed", "data": {"n": 2}}})
    assert holds("steps['a'].status == 'completed' && steps['a'].data.n == 2", v)


def test_a_routing_submission_has_an_extension_and_no_id_or_steps() -> None:
    v = routing_variables(mime="image/png", size=5, filename="cat.PNG", metadata={}, tenant="acme")
    assert holds("input.extension == 'png' && job.priority == -1 && job.tenant == 'acme'", v)
    assert set(v) == {"input", "job"} and "id" not in v["job"]


def test_when_is_type_checked_against_the_same_variables() -> None:
    check_condition("input.filename.endsWith('.pdf') && job.priority > 3", "document", [])
    with pytest.raises(ConditionError):
        check_condition("input.filenam == ''", "document", [])
