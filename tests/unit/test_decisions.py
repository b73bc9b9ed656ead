"""Small decisions the engine and the configuration rest on, table-driven: back-off, pools,
settings, conditions, templates."""

from __future__ import annotations

import random

import pytest

from mediamill.config import load_settings, parse_pools
from mediamill.engine.retry import RetryPolicy
from mediamill.errors import ConfigError
from mediamill.workflows.conditions import (
    ConditionError,
    JobFacts,
    check_condition,
    condition_variables,
    evaluate_condition,
    routing_variables,
)
from mediamill.workflows.naming import render_template


@pytest.mark.parametrize(("attempt", "ceiling"), [(0, 2.0), (1, 4.0), (3, 16.0), (8, 512.0), (9, 600.0),
                                                  (10_000, 600.0)])
def test_backoff_doubles_up_to_its_cap(attempt: int, ceiling: float) -> None:
    policy = RetryPolicy(base_seconds=2.0, max_seconds=600.0)
    assert policy.ceiling(attempt) == ceiling
    rng = random.Random(attempt)
    delays = [policy.next_delay(attempt, rng) for _ in range(200)]
    assert all(0 <= d <= ceiling for d in delays)
    assert max(delays) - min(delays) > ceiling / 4  # full jitter: spread over the range, never one value


@pytest.mark.parametrize(("items", "pools"),
                         [(["*=2"], {"*": 2}), (["video=1", " image=4 "], {"video": 1, "image": 4})])
def test_pools_parse(items: list[str], pools: dict[str, int]) -> None:
    assert parse_pools(items) == pools


@pytest.mark.parametrize("item", ["video", "=2", "video=0", "video=-1", "video=²", "video=two"])
def test_a_bad_pool_is_refused_by_name(item: str) -> None:
    with pytest.raises(ConfigError, match="QUEUE=N"):
        parse_pools([item])


def test_a_bad_setting_names_the_variable_and_the_value(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        load_settings(data_dir=tmp_path, lease_seconds=-1)
    assert "MEDIAMILL_LEASE_SECONDS" in str(err.value) and "-1" in str(err.value)




@pytest.mark.parametrize(("expr", "inp", "expected"), [
    ("input.width >= 1920", {"width": 3840}, True),
    ("input.width >= 1920", {"width": 640}, False),
    ("input.width >= 1920", {}, False),  # not probed: a typed default, never a crash
    ('job.metadata.tier == "gold" && input.duration > 10.0', {"duration": 12.5}, True),
    ('steps.validate.status == "completed"', {}, True),
])
def test_step_conditions(expr: str, inp: dict[str, object], expected: bool) -> None:
    facts = JobFacts(tenant="acme", priority=5, metadata={"tier": "gold"}, submitter="app", probe=inp)
    variables = condition_variables(facts, workflow_type="video",
                                    steps={"validate": {"status": "completed", "data": {}}})
    assert evaluate_condition(expr, variables) is expected


@pytest.mark.parametrize(("expr", "message"), [
    ("input.widht > 1", "unknown field input.widht"),
    ("inpt.width > 1", "unknown variable 'inpt'"),
    ("input.width", "must be a bool expression"),
])
def test_bad_conditions_say_why(expr: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        check_condition(expr, "video", ["validate"])


def test_routing_conditions_see_the_submission_facts() -> None:
    variables = routing_variables(mime="video/mp4", size=10, filename="Clip.MP4", metadata={}, tenant="acme")
    assert evaluate_condition('input.extension == "mp4" && job.tenant == "acme"', variables)
    assert evaluate_condition("job.priority == -1", variables)  # no priority given


@pytest.mark.parametrize(("template", "out"), [
    ("{stem}.{ext}", "clip.mp4"), ("{metadata.title}/{stem}", "Holiday/clip"), ("{missing}", KeyError),
    ("{stem.__class__}", KeyError),  # plain names only: no attribute access
])
def test_templates(template: str, out: object) -> None:
    fields = {"stem": "clip", "ext": "mp4", "metadata": {"title": "Holiday"}}
    if out is KeyError:
        with pytest.raises(KeyError):
            render_template(template, fields)
        assert render_template(template, fields, strict=False) == template
    else:
        assert render_template(template, fields) == out
