"""Workflow documents: built-ins, versions, rollback, diff, located validation errors, property test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediamill.errors import WorkflowInvalid
from mediamill.runtime import Runtime
from mediamill.store import workflow_repo
from mediamill.store.workflow_repo import BUILTIN_FILES, builtin_workflows, install_builtins
from mediamill.workflows import parse_workflow
from tests.helpers import BACKENDS, database_url, make_runtime

BUILTIN_STEPS = {
    "WF-VIDEO-TRANSCODE": ["validate_video", "extract_video_metadata", "transcode_video", "transcode_video",
                           "transcode_video", "generate_thumbnails", "finalize_job"],
    "WF-IMAGE-PROCESS": ["validate_image", "resize_image", "create_thumbnail", "optimize_image", "convert_format"],
    "WF-AUDIO-TRANSCODE": ["validate_audio", "extract_audio_metadata", "transcode_audio", "transcode_audio",
                           "generate_waveform", "finalize_job"],
    "WF-DOC-PROCESS": ["validate_document", "extract_text", "render_thumbnail", "convert_document", "finalize_job"],
    "WF-VIDEO-ANALYZE": ["validate_video", "extract_video_metadata", "contact_sheet", "detect_scenes",
                         "transcribe_audio", "build_report"],
}

BASE = """
code: WF-TEST
name: Test pipeline
type: image
input_types: [image/jpeg]
steps:
  - name: Validate
    action: validate_image
  - name: Resize
    action: resize_image
    params: {max_dimension: 2000}
    on_failure: retry
"""


@pytest.fixture(params=BACKENDS)
def rt(request: pytest.FixtureRequest, tmp_path: Path):
    with database_url(request.param, tmp_path) as url:
        runtime = make_runtime(tmp_path / "data", url)
        yield runtime
        runtime.close()


def test_builtins_are_the_spec_templates() -> None:
    wfs = {w.code: w for w in builtin_workflows()}
    assert len(BUILTIN_FILES) == 5
    assert {code: [s.action for s in wf.steps] for code, wf in wfs.items()} == BUILTIN_STEPS
    video = wfs["WF-VIDEO-TRANSCODE"]
    assert [s.params.get("resolution") for s in video.steps[2:5]] == ["1080p", "720p", "480p"]
    assert video.steps[5].params == {"count": 5, "format": "jpeg"}
    image = wfs["WF-IMAGE-PROCESS"]
    assert [s.on_failure for s in image.steps] == ["stop", "retry", "continue", "retry", "continue"]
    assert image.priority == 3 and image.timeout_minutes == 30


def test_builtins_install_once(rt: Runtime) -> None:
    first = install_builtins(rt.engine)
    assert sorted(s.code for s in first) == sorted(BUILTIN_STEPS)
    assert install_builtins(rt.engine) == []  # a second start creates nothing
    with rt.engine.connect() as conn:
        rows = workflow_repo.list_workflows(conn)
    assert {r["workflow_code"]: (r["versions"], r["current_version"]) for r in rows} == \
        {code: (1, 1) for code in BUILTIN_STEPS}


def test_versions_rollback_and_diff(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        v1 = workflow_repo.save_version(conn, parse_workflow(BASE))
        same = workflow_repo.save_version(conn, parse_workflow(BASE + "\n# only a comment\n"))
        v2 = workflow_repo.save_version(conn, parse_workflow(BASE.replace("2000", "1600")))
    assert (v1.version, same.version, same.created, v2.version) == (1, 1, False, 2)
    with rt.engine.begin() as conn:
        assert workflow_repo.get_workflow(conn, "WF-TEST").version == 2
        diff = workflow_repo.diff_versions(conn, "WF-TEST", 1, 2)
        workflow_repo.activate_version(conn, "WF-TEST", 1)  # rollback
    assert diff["steps_changed"] == ["Resize"] and not diff["steps_added"] and not diff["steps_removed"]
    assert "-    max_dimension: 2000" in diff["diff"] and "+    max_dimension: 1600" in diff["diff"]
    with rt.engine.connect() as conn:
        current = workflow_repo.get_workflow(conn, "WF-TEST")
        pinned = workflow_repo.get_workflow(conn, "WF-TEST", 1)
        newer = workflow_repo.get_workflow(conn, "WF-TEST", 2)
    assert current.version == 1 and current.definition.steps[1].params == {"max_dimension": 2000}
    assert pinned.definition.steps[1].params == {"max_dimension": 2000}  # a job on v1 still reads v1
    assert newer.definition.steps[1].params == {"max_dimension": 1600}
    assert len(set(pinned.step_ids) & set(newer.step_ids)) == 0


def test_parallel_is_accepted_on_transcode_video() -> None:
    doc = (BASE.replace("action: resize_image", "action: transcode_video").replace("max_dimension: 2000", "crf: 20")
           .replace("    on_failure: retry", "    on_failure: retry\n    parallel: auto"))
    assert parse_workflow(doc).steps[1].parallel == "auto"
    assert parse_workflow(doc.replace("parallel: auto", "parallel: 6")).steps[1].parallel == 6
    assert "parallel" not in parse_workflow(BASE).canonical_json()  # unchanged checksums without it


@pytest.mark.parametrize(("doc", "expected"), [
    (BASE.replace("on_failure: retry", "on_failure: skip"),
     "steps[1].on_failure: expected stop|continue|retry, got 'skip'"),
    (BASE.replace("action: resize_image", "action: resize_imag"), "steps[1].action: unknown action 'resize_imag'"),
    (BASE.replace("name: Resize", "name: Validate"), "steps[1].name: duplicate step name 'Validate'"),
    (BASE.replace("max_dimension: 2000", "max_dimension: big"), "steps[1].params.max_dimension"),
    (BASE + "    when: input.width >\n", "steps[1].when: syntax error"),
    (BASE + "    when: input.widht > 10\n", "steps[1].when: unknown field input.widht"),
    (BASE + "    when: input.width + 'px' == 1\n", "steps[1].when: type error"),
    (BASE + "    when: input.width\n", "steps[1].when: must be a bool expression"),
    (BASE.replace("    on_failure: retry", "    on_failure: retry\n    needs: [Validate]").replace(
        "    action: validate_image", "    action: validate_image\n    needs: [Resize]"),
     "steps: cycle in needs"),
    (BASE.replace("steps:", "timeout_minutes: -1\nsteps:"), "timeout_minutes: Input should be greater than 0"),
    (BASE.replace("    on_failure: retry", "    on_failure: retry\n    parallel: 4"),
     "steps[1].parallel: resize_image cannot be split; parallel: is for transcode_video"),
    (BASE.replace("action: resize_image", "action: transcode_video").replace("max_dimension: 2000", "crf: 20")
     .replace("    on_failure: retry", "    on_failure: retry\n    parallel: 1"),
     "steps[1].parallel: expected auto or a number of segments from 2 to 64, got 1"),
    (BASE.replace("action: resize_image", "action: transcode_video").replace("max_dimension: 2000", "crf: 20")
     .replace("    on_failure: retry", "    on_failure: retry\n    parallel: fast"),
     "steps[1].parallel: expected auto or a number of segments from 2 to 64, got 'fast'"),
    ("code: lower\nname: x\ntype: t\nsteps: []\n", "code: String should match pattern"),
    ("- just\n- a list\n", "expected a mapping"),
    ("code: [unclosed\n", "invalid YAML"),
])
def test_bad_documents_are_located(doc: str, expected: str) -> None:
    with pytest.raises(WorkflowInvalid) as err:
        parse_workflow(doc, source="wf.yaml")
    assert any(expected in p for p in err.value.problems), err.value.problems
    assert str(err.value).startswith("wf.yaml: ")


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False),
                     st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                       max_leaves=12)
_step = st.fixed_dictionaries({}, optional={
    "name": st.one_of(st.text(max_size=12), _scalars), "action": st.sampled_from(
        ["noop", "sleep", "fail", "resize_image", "nope", "transcode_video", 3]),
    "params": _values, "on_failure": st.sampled_from(["stop", "continue", "retry", "skip", None]),
    "when": st.sampled_from(["input.width > 1", "job.priority > 2 &&", "true", "1", "steps.x.status == 'y'", ""]),
    "needs": st.one_of(st.lists(st.text(max_size=5), max_size=3), _scalars),
    "timeout_seconds": st.one_of(st.integers(-5, 10**6), st.text(max_size=3))})
_doc = st.one_of(_values, st.fixed_dictionaries(
    {"code": st.sampled_from(["WF-A", "wf", "", "X" * 60]), "name": st.text(max_size=10),
     "type": st.sampled_from(["image", "video", "", "x"]), "steps": st.lists(_step, max_size=5)},
    optional={"priority": _scalars, "retry_count": _scalars, "input_types": _values, "queue": _scalars}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_doc)
def test_validator_never_crashes(doc: object) -> None:
    text = yaml.safe_dump(doc)
    try:
        wf = parse_workflow(text)
    except WorkflowInvalid as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        assert wf.steps and wf.code


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_validator_never_crashes_on_text(text: str) -> None:
    try:
        parse_workflow(text)
    except WorkflowInvalid as exc:
        assert exc.problems
